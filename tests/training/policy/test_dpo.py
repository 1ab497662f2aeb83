import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.tiny_policy import one_cpu_thread, saved_datasets, tiny_policy_dir  # noqa: F401
from training.policy.dpo import DPORunConfig, run_dpo


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return saved_datasets(tmp_path_factory.mktemp("data"))


def test_run_dpo_two_steps_against_the_starting_policy(tmp_path, data):
    cfg = DPORunConfig(
        model_name_or_path=tiny_policy_dir(),
        dataset_path=data["prefs"],
        output_dir=str(tmp_path / "dpo"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        device="cpu",
        max_length=128,
    )
    metrics = run_dpo(cfg)
    assert metrics["steps"] == 2 and metrics["reference"] == tiny_policy_dir()
    # with the policy equal to its reference, the first DPO loss is exactly log(2)
    assert metrics["loss_curve"][0]["value"] == pytest.approx(0.693147, abs=1e-4)
    assert metrics["final_reward_accuracy"] is not None and metrics["train_tokens"] > 0
    assert len(metrics["curves"]["rewards/margins"]) == 2
    out = Path(cfg.output_dir)
    assert json.loads((out / "metrics.json").read_text())["stage"] == "dpo"
    before = load_file(Path(tiny_policy_dir()) / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_dpo_settings_fail_fast(data):
    with pytest.raises(ValueError, match="beta"):
        DPORunConfig(beta=0)
    with pytest.raises(ValueError, match="loss_type"):
        DPORunConfig(loss_type="nope")
    with pytest.raises(ValueError, match="dataset_path"):
        run_dpo(DPORunConfig(model_name_or_path=tiny_policy_dir()))
