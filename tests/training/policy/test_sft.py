import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.tiny_policy import ONE_THREAD_ENV, one_cpu_thread, saved_datasets, tiny_policy_dir  # noqa: F401
from training.policy.sft import SFTRunConfig, assistant_mask_supported, main, run_sft, to_prompt_completion

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return saved_datasets(tmp_path_factory.mktemp("data"))


def _cfg(tmp_path, data, **kw) -> SFTRunConfig:
    base = dict(
        model_name_or_path=tiny_policy_dir(),
        dataset_path=data["sft"],
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        device="cpu",
        max_length=128,
    )
    return SFTRunConfig(**{**base, **kw})


def test_run_sft_trains_assistant_tokens_and_saves_checkpoint(tmp_path, data):
    cfg = _cfg(tmp_path, data)
    metrics = run_sft(cfg)
    assert metrics["steps"] == 3 and metrics["loss_mask"] == "assistant_only"
    assert len(metrics["loss_curve"]) == 3 and all(p["value"] > 0 for p in metrics["loss_curve"])
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_s"] > 0
    manifest = json.loads((Path(data["sft"]) / "manifest.json").read_text())
    assert metrics["dataset_content_hash"] == manifest["content_hash"]
    out = Path(cfg.output_dir)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()
    before = load_file(Path(tiny_policy_dir()) / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_sft_falls_back_to_completion_only_loss_without_generation_markers(tmp_path, data):
    plain = tmp_path / "plain-template"
    shutil.copytree(tiny_policy_dir(), plain)
    template = plain / "chat_template.jinja"
    template.write_text(template.read_text().replace("{%- generation %}", "").replace("{%- endgeneration %}", ""))
    from transformers import AutoTokenizer

    assert not assistant_mask_supported(AutoTokenizer.from_pretrained(plain))
    metrics = run_sft(_cfg(tmp_path, data, model_name_or_path=str(plain), max_steps=2))
    assert metrics["loss_mask"] == "completion_only" and metrics["steps"] == 2
    example = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    assert to_prompt_completion(example) == {"prompt": example["messages"][:1], "completion": example["messages"][1:]}


def test_sft_with_lora_merges_adapters_into_a_plain_checkpoint(tmp_path, data):
    cfg = _cfg(tmp_path, data, use_lora=True, lora_r=2, lora_alpha=4, max_steps=2)
    metrics = run_sft(cfg)
    out = Path(cfg.output_dir)
    assert metrics["use_lora"] and metrics["trainable_params"] < 50_000
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"


def test_sft_settings_fail_fast(tmp_path, data):
    with pytest.raises(ValueError, match="max_steps"):
        SFTRunConfig(max_steps=0)
    with pytest.raises(ValueError, match="model_name_or_path"):
        run_sft(SFTRunConfig(dataset_path=data["sft"]))
    with pytest.raises(ValueError, match="lacks columns"):
        run_sft(_cfg(tmp_path, data, dataset_path=data["prefs"]))


def test_sft_command_line_smoke_run_in_subprocess(tmp_path, data):
    config = tmp_path / "sft.json"
    out = tmp_path / "cli-out"
    config.write_text(
        json.dumps(
            {
                "model_name_or_path": tiny_policy_dir(),
                "dataset_path": data["sft"],
                "output_dir": str(out),
                "max_steps": 5,
                "device": "cpu",
                "max_length": 128,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.policy.sft",
            "--config",
            str(config),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
        ],
        cwd=REPO,
        env={**env, **ONE_THREAD_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[sft] step 2/2" in proc.stderr  # progress lines
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["config"]["max_steps"] == 2  # the flag overrode the file
    assert (out / "model.safetensors").is_file()


def test_main_rejects_unknown_config_keys(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_name_or_pth": "x"}))
    with pytest.raises(ValueError, match="unknown settings"):
        main(["--config", str(bad)])
