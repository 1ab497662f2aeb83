import json
from pathlib import Path

import numpy as np
import pytest

from tests.training import toy_reward
from tests.training.tiny_policy import one_cpu_thread, saved_datasets, tiny_policy_dir  # noqa: F401
from training.policy.grpo import (
    GRPORunConfig,
    LengthBand,
    NoEmoji,
    RewardModelScore,
    as_score_fn,
    load_reward_loader,
    reward_functions,
    run_grpo,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return saved_datasets(tmp_path_factory.mktemp("data"))


def _cfg(tmp_path, data, **kw) -> GRPORunConfig:
    base = dict(
        model_name_or_path=tiny_policy_dir(),
        dataset_path=data["rl"],
        output_dir=str(tmp_path / "grpo"),
        reward_loader="tests.training.toy_reward:load_scorer",
        reward_model_path="rm-dir",
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=12,
        learning_rate=1e-3,
        device="cpu",
        max_length=128,
    )
    return GRPORunConfig(**{**base, **kw})


def test_run_grpo_with_reward_model_loaded_by_dotted_path_and_rule_rewards(tmp_path, data):
    toy_reward.CALLS.clear()
    cfg = _cfg(tmp_path, data, length_band_weight=0.5, no_emoji_weight=0.5)
    metrics = run_grpo(cfg)
    assert toy_reward.CALLS == ["rm-dir"]  # the loader got the reward model directory
    assert metrics["steps"] == 2
    assert metrics["reward_functions"] == ["RewardModelScore", "LengthBand", "NoEmoji"]
    assert metrics["reward_weights"] == [1.0, 0.5, 0.5]
    assert len(metrics["curves"]["reward"]) == 2 and metrics["reward_last"] is not None
    assert len(metrics["curves"]["rewards/RewardModelScore/mean"]) == 2
    assert metrics["train_tokens"] > 0
    assert json.loads((Path(cfg.output_dir) / "metrics.json").read_text())["stage"] == "grpo"
    assert (Path(cfg.output_dir) / "model.safetensors").is_file()


def test_run_grpo_accepts_a_scorer_in_process(tmp_path, data):
    seen = []

    def scorer(contexts, responses):
        seen.append((contexts, responses))
        return np.zeros(len(responses))

    metrics = run_grpo(_cfg(tmp_path, data, reward_loader="no.such.module:load", beta=0.0), score_fn=scorer)
    assert metrics["steps"] == 2 and seen
    contexts, responses = seen[0]
    assert len(contexts) == len(responses) == 4 and contexts[0][-1]["role"] == "user"


def test_reward_functions_and_loader_resolution():
    completions = [[{"role": "assistant", "content": "hi 😀"}], [{"role": "assistant", "content": "x" * 50}]]
    prompts = [[{"role": "user", "content": "hey"}]] * 2
    assert NoEmoji()(prompts, completions) == [-1.0, 0.0]
    assert LengthBand(1, 10)(prompts, completions) == [0.0, -1.0]
    rm = RewardModelScore(lambda c, r: np.array([1.0, np.nan]))
    assert rm(prompts, completions) == [1.0, None]
    assert rm(["plain prompt", "p2"], ["a", "b"]) == [1.0, None]
    funcs, weights = reward_functions(GRPORunConfig(), as_score_fn(toy_reward.ToyRewardModel()))
    assert [type(f).__name__ for f in funcs] == ["RewardModelScore"] and weights == [1.0]
    # a reward that pays for brevity, with its length trend taken out, ranks the replies alike
    brevity = lambda c, r: -np.log1p([len(x) for x in r])  # noqa: E731
    texts = [[{"role": "assistant", "content": "x" * n}] for n in (3, 30, 300)]
    assert np.diff(RewardModelScore(brevity)([["u"]] * 3, texts)).max() < 0
    np.testing.assert_allclose(RewardModelScore(brevity, length_slope=-1.0)([["u"]] * 3, texts), 0.0, atol=1e-12)
    funcs, _ = reward_functions(GRPORunConfig(length_slope=-0.5, card_length_slope=-1.0), brevity)
    assert funcs[0].length_slope == -0.5 and funcs[0].card_length_slope == -1.0
    # a card prompt (it carries `instructions`) has its own trend taken out, a traffic prompt the traffic one
    mixed = funcs[0]([["u"]] * 3, texts, instructions=['[{"type": "no_emoji"}]', None, '[{"type": "no_emoji"}]'])
    expected = -np.log1p([3, 30, 300]) - np.array([-1.0, -0.5, -1.0]) * np.log1p([3, 30, 300])
    np.testing.assert_allclose(mixed, expected, atol=1e-12)
    assert load_reward_loader("tests.training.toy_reward:load_scorer") is toy_reward.load_scorer
    with pytest.raises(ValueError, match="cannot import"):
        load_reward_loader("no.such.module:load")
    with pytest.raises(ValueError, match="no callable"):
        load_reward_loader("tests.training.toy_reward:missing")
    with pytest.raises(ValueError, match="neither callable"):
        as_score_fn(42)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reward_loader": "nocolon"}, "reward_loader"),
        ({"num_generations": 1}, "num_generations"),
        ({"per_device_train_batch_size": 6, "num_generations": 4}, "multiple"),
        ({"length_band_min_chars": 10, "length_band_max_chars": 5}, "length_band"),
    ],
)
def test_grpo_settings_fail_fast(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRPORunConfig(**kwargs)


def test_rollouts_go_through_vllm_colocated_only_on_a_gpu(tmp_path, data, monkeypatch):
    import torch

    import engine.sampler
    import training.policy.grpo as grpo

    assert grpo.rollout_settings(_cfg(tmp_path, data)) == {"use_vllm": False}  # CPU: the trainer's generate
    with pytest.raises(ValueError, match="`rollout_backend`"):
        _cfg(tmp_path, data, rollout_backend="vllm")
    monkeypatch.setattr(engine.sampler, "installed", lambda module: True)
    monkeypatch.setattr(grpo, "resolve_device", lambda device: torch.device("cuda"))
    on_gpu = grpo.rollout_settings(_cfg(tmp_path, data, vllm_gpu_memory_utilization=0.3))
    assert on_gpu == {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3}
    assert grpo.rollout_settings(_cfg(tmp_path, data, rollout_backend="hf")) == {"use_vllm": False}
