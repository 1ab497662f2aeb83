"""Stage 2 of herding: a small DPO patch on the preference pairs, anchored to the SFT model.

    python -m training.policy.dpo --model_name_or_path data/models/gen1-sft --dataset_path data/datasets/prefs \
        --output_dir data/models/gen1-dpo --max_steps 50

The policy starts from the SFT checkpoint and the reference is that same checkpoint (or
`ref_model_name_or_path`), loaded once more and kept frozen; with LoRA, TRL uses the adapter-free base as
the reference instead of a second copy. Writes the model + tokenizer (HF format) and `metrics.json`
(loss curve, reward accuracy and margin curves, tokens/s) to `output_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from training.policy.pipes_report import StageReporter
from training.policy.stage_config import StageConfig
from training.policy.stage_runner import stage_main
from training.policy.trl_stage import Loaded, Wiring, run_trl_stage

DPO_LOSSES = (
    "sigmoid",
    "hinge",
    "ipo",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "apo_zero",
    "apo_down",
    "exo_pair",
    "nca_pair",
    "discopop",
    "sigmoid_norm",
)


@dataclass
class DPORunConfig(StageConfig):
    output_dir: str = field(default="data/models/dpo", metadata={"help": "Where the DPO policy is written."})
    learning_rate: float = field(default=5e-6, metadata={"help": "Peak learning rate (DPO wants a small one)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the pairs when max_steps is -1."})
    ref_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Frozen reference policy; None uses model_name_or_path (the SFT model)."}
    )
    beta: float = field(default=0.1, metadata={"help": "Strength of the pull toward the reference policy."})
    loss_type: str = field(default="sigmoid", metadata={"help": f"DPO loss, one of {DPO_LOSSES}."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta={self.beta} must be > 0; 0.1 is the usual value")
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {DPO_LOSSES}")


def _last(curve: list[dict]) -> float | None:
    return curve[-1]["value"] if curve else None


def run_dpo(cfg: DPORunConfig, reporter: StageReporter | None = None) -> dict[str, Any]:
    """Train on the `prompt/chosen/rejected` dataset at `cfg.dataset_path`; returns the metrics."""
    from engine.policy import load_model

    reference = cfg.ref_model_name_or_path or cfg.model_name_or_path

    def wire(loaded: Loaded) -> Wiring:
        ref_model = None
        if not cfg.use_lora:
            same = cfg.ref_model_name_or_path in (None, cfg.model_name_or_path)
            ref_cfg = replace(cfg, model_name_or_path=reference, gguf_file=cfg.gguf_file if same else None)
            # Loaded explicitly: TRL would otherwise rebuild it from the config's path, which fails for GGUF files.
            ref_model = load_model(ref_cfg).eval()
        return Wiring(
            config={
                "beta": cfg.beta,
                "loss_type": [cfg.loss_type],
                "max_length": cfg.max_length,
                "include_num_input_tokens_seen": "non_padding",
            },
            curves=("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "grad_norm"),
            trainer={"ref_model": ref_model},
            metrics=lambda curves: {
                "reference": reference,
                "final_reward_accuracy": _last(curves["rewards/accuracies"]),
                "final_reward_margin": _last(curves["rewards/margins"]),
            },
        )

    return run_trl_stage("DPO", cfg, reporter, ["prompt", "chosen", "rejected"], wire)


def main(argv: list[str] | None = None) -> int:
    return stage_main("dpo", DPORunConfig, run_dpo, argv)


if __name__ == "__main__":
    raise SystemExit(main())
