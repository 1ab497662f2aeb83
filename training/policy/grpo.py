"""Stage 3 of herding: online RL (GRPO) on the RL prompt pool against the pointwise reward model.

    python -m training.policy.grpo --model_name_or_path data/models/gen1-dpo --dataset_path data/datasets/rl_pool \
        --reward_model_path data/models/rm-pointwise --output_dir data/models/gen1 --max_steps 50

The reward model is loaded by a function named as a dotted path (`module:function`, resolved with importlib),
so this script does not depend on any one reward model implementation: the loader takes `reward_model_path`
and returns a scorer `score(contexts, responses) -> array` (or an object with such a `.score` method).
Optional rule rewards penalise replies outside a length band and replies with emoji, the artifacts an
engagement reward is known to over-reward. On character-card prompts (rows with an `instructions` column)
the verifiable rule checks add the share of the card's rules a reply keeps to the reward model's score. Writes the model + tokenizer (HF format) and `metrics.json`
(loss and reward curves, tokens/s) to `output_dir`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.sampler import ROLLOUT_BACKENDS, rollout_backend
from engine.sampling import CandidateConfig
from engine.style import count_emoji
from pipeline.config_fields import forwarded
from pipeline.device import resolve_device
from training.policy.pipes_report import StageReporter
from training.policy.stage_config import StageConfig
from training.policy.stage_runner import stage_main
from training.policy.steer_data import violations
from training.policy.trl_stage import Loaded, Wiring, run_trl_stage
from training.rewards.length_bias import length_adjusted

ScoreFn = Callable[[list[list[dict]], list[str]], np.ndarray]


@dataclass
class GRPORunConfig(StageConfig):
    output_dir: str = field(default="data/models/grpo", metadata={"help": "Where the RL policy is written."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate (RL wants a small one)."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Completions per device per step; a multiple of num_generations."}
    )
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Directory of the pointwise reward model, handed to `reward_loader`."}
    )
    reward_loader: str = field(
        default="training.rewards.reward_model:load_reward_model",
        metadata={
            "help": "Dotted path 'module:function' of a function(path) returning a scorer "
            "score(contexts, responses) -> array, or an object with a .score method (a RewardModel)."
        },
    )
    num_generations: int = field(default=4, metadata={"help": "Completions sampled per prompt (the GRPO group)."})
    max_completion_length: int = field(default=64, metadata={"help": "Longest sampled completion, in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    rollout_backend: str = field(
        default="auto",
        metadata={
            "help": f"Engine of the rollouts, one of {ROLLOUT_BACKENDS}: 'auto' is vLLM colocated with the trainer "
            "on a GPU where vLLM is installed, else the trainer's own generate ('hf')."
        },
    )
    vllm_gpu_memory_utilization: float = forwarded(CandidateConfig, "vllm_gpu_memory_utilization")
    beta: float = field(
        default=0.04, metadata={"help": "KL pull toward the starting policy; 0 drops the reference model."}
    )
    rm_weight: float = field(default=1.0, metadata={"help": "Weight of the reward-model score."})
    length_slope: float = field(
        default=0.0,
        metadata={
            "help": "The reward model's within-prompt length trend on traffic prompts, per unit of log(1 + chars), "
            "taken out of its score (training.rewards.length_bias; the dataset manifests record it); 0 uses the raw "
            "score."
        },
    )
    card_length_slope: float = field(
        default=0.0,
        metadata={
            "help": "The same trend on the character-card prompts (those with `instructions`), fitted apart: a "
            "card's rules bound the length, and the reward model scores rule-keeping replies its own way."
        },
    )
    length_band_min_chars: int = field(default=1, metadata={"help": "Shortest reply not penalised by the band."})
    length_band_max_chars: int = field(default=400, metadata={"help": "Longest reply not penalised by the band."})
    length_band_weight: float = field(
        default=0.0, metadata={"help": "Weight of the length-band rule (-1 outside the band); 0 turns it off."}
    )
    no_emoji_weight: float = field(
        default=0.0, metadata={"help": "Weight of the no-emoji rule (-1 when a reply has emoji); 0 turns it off."}
    )
    rule_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the character-card rule checks (the share of its card's instructions a reply keeps, "
            "on prompts that carry an `instructions` column); 0 turns them off."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if ":" not in self.reward_loader:
            raise ValueError(f"reward_loader={self.reward_loader!r} must look like 'package.module:function'")
        rollout_backend(self.rollout_backend, resolve_device(self.device).type)
        if self.num_generations < 2:
            raise ValueError(f"num_generations={self.num_generations} must be >= 2: GRPO compares within a group")
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size={self.per_device_train_batch_size} must be a multiple of "
                f"num_generations={self.num_generations}"
            )
        if self.length_band_max_chars < self.length_band_min_chars:
            raise ValueError("length_band_max_chars must be >= length_band_min_chars")
        if min(self.rm_weight, self.length_band_weight, self.no_emoji_weight, self.rule_weight, self.beta) < 0:
            raise ValueError("rm_weight, length_band_weight, no_emoji_weight, rule_weight and beta must be >= 0")


def load_reward_loader(dotted: str) -> Callable[[str | None], Any]:
    """Resolve 'package.module:function' with importlib."""
    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"reward_loader={dotted!r}: cannot import {module_name!r} ({exc})") from exc
    loader = getattr(module, attr, None)
    if not callable(loader):
        raise ValueError(f"reward_loader={dotted!r}: {module_name} has no callable {attr!r}")
    return loader


def as_score_fn(scorer: Any) -> ScoreFn:
    """A reward model object with `.score`, or a plain callable, as score(contexts, responses)."""
    fn = getattr(scorer, "score", scorer)
    if not callable(fn):
        raise ValueError(f"the reward loader returned a {type(scorer).__name__}: neither callable nor has .score")
    return fn


def _reply(completion: Any) -> str:
    """TRL passes conversational completions as [{'role': 'assistant', 'content': ...}] and plain ones as str."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion)


class RewardModelScore:
    """GRPO reward: the pointwise reward model's score of each completion in its conversation."""

    def __init__(self, score_fn: ScoreFn, length_slope: float = 0.0, card_length_slope: float = 0.0) -> None:
        self.score_fn, self.length_slope, self.card_length_slope = score_fn, length_slope, card_length_slope

    def __call__(self, prompts, completions, instructions=None, **kwargs) -> list[float]:
        contexts = [list(p) if not isinstance(p, str) else [{"role": "user", "content": p}] for p in prompts]
        replies = [_reply(c) for c in completions]
        scores = np.asarray(self.score_fn(contexts, replies), dtype=np.float64).reshape(-1)
        if len(scores) != len(completions):
            raise ValueError(f"the reward model returned {len(scores)} scores for {len(completions)} completions")
        # each prompt's kind has its own trend: a card prompt carries its `instructions`
        specs = instructions or [None] * len(completions)
        slopes = np.array([self.card_length_slope if spec else self.length_slope for spec in specs])
        scores = length_adjusted(scores, replies, slopes)
        return [float(s) if np.isfinite(s) else None for s in scores]


class LengthBand:
    """-1 for a reply shorter or longer than the band, else 0."""

    def __init__(self, min_chars: int, max_chars: int) -> None:
        self.min_chars, self.max_chars = min_chars, max_chars

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [0.0 if self.min_chars <= len(_reply(c)) <= self.max_chars else -1.0 for c in completions]


class NoEmoji:
    """-1 for a reply with any emoji, else 0."""

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return [-1.0 if count_emoji(_reply(c)) else 0.0 for c in completions]


class RuleChecks:
    """The share of its character card's instructions a reply keeps, checked by the same rule checkers the
    steerability evaluation uses; 0 for a prompt without card rules (constant within its group, so it moves
    nothing there). TRL hands the dataset's `instructions` column (the card's specs as JSON) to the function."""

    def __call__(self, prompts, completions, instructions=None, **kwargs) -> list[float]:
        specs = instructions or [None] * len(completions)
        out = []
        for spec, completion in zip(specs, completions, strict=True):
            if not spec:
                out.append(0.0)
                continue
            n = len(json.loads(spec))
            out.append(1.0 - len(violations(spec, _reply(completion))) / n)
        return out


def rollout_settings(cfg: GRPORunConfig) -> dict[str, Any]:
    """TRL's GRPO settings of the rollout engine: vLLM in the trainer's process, sharing its GPU, or none."""
    if rollout_backend(cfg.rollout_backend, resolve_device(cfg.device).type) == "vllm":
        return {
            "use_vllm": True,
            "vllm_mode": "colocate",
            "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization,
        }
    return {"use_vllm": False}


def reward_functions(
    cfg: GRPORunConfig, score_fn: ScoreFn, with_rules: bool = False
) -> tuple[list[Callable], list[float]]:
    """The weighted reward functions; `with_rules` when the prompts carry card instructions."""
    funcs: list[Callable] = [RewardModelScore(score_fn, cfg.length_slope, cfg.card_length_slope)]
    weights = [cfg.rm_weight]
    if with_rules and cfg.rule_weight > 0:
        funcs.append(RuleChecks())
        weights.append(cfg.rule_weight)
    if cfg.length_band_weight > 0:
        funcs.append(LengthBand(cfg.length_band_min_chars, cfg.length_band_max_chars))
        weights.append(cfg.length_band_weight)
    if cfg.no_emoji_weight > 0:
        funcs.append(NoEmoji())
        weights.append(cfg.no_emoji_weight)
    return funcs, weights


def run_grpo(
    cfg: GRPORunConfig, reporter: StageReporter | None = None, score_fn: ScoreFn | None = None
) -> dict[str, Any]:
    """Train on the `prompt` dataset at `cfg.dataset_path`; `score_fn` (optional) replaces the loaded reward model."""

    def load_scorer() -> ScoreFn:
        if score_fn is not None:
            return score_fn
        return as_score_fn(load_reward_loader(cfg.reward_loader)(cfg.reward_model_path))

    def wire(loaded: Loaded) -> Wiring:
        dataset = loaded.dataset
        with_rules = "instructions" in dataset.column_names and any(dataset["instructions"])
        funcs, weights = reward_functions(cfg, loaded.prepared, with_rules)
        reward_keys = [f"rewards/{type(f).__name__}/mean" for f in funcs]

        def metrics(curves) -> dict[str, Any]:
            rewards = curves["reward"]
            return {
                "reward_functions": [type(f).__name__ for f in funcs],
                "reward_weights": weights,
                "reward_first": rewards[0]["value"] if rewards else None,
                "reward_last": rewards[-1]["value"] if rewards else None,
            }

        return Wiring(
            config={
                "num_generations": cfg.num_generations,
                "max_completion_length": cfg.max_completion_length,
                "temperature": cfg.temperature,
                "beta": cfg.beta,
                "reward_weights": weights,
                **rollout_settings(cfg),
            },
            curves=("loss", "reward", "reward_std", "kl", "completions/mean_length", *reward_keys),
            trainer={"reward_funcs": funcs},
            metrics=metrics,
        )

    return run_trl_stage(
        "GRPO",
        cfg,
        reporter,
        ["prompt"],
        wire,
        optional_columns=["instructions"],
        padding_side="left",
        prepare=load_scorer,
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main("grpo", GRPORunConfig, run_grpo, argv)


if __name__ == "__main__":
    raise SystemExit(main())
