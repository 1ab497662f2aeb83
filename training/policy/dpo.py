"""Stage 2 of herding: a small DPO patch on the preference pairs, anchored to the SFT model.

    python -m training.policy.dpo --model_name_or_path data/models/gen1-sft --dataset_path data/datasets/prefs \
        --output_dir data/models/gen1-dpo --max_steps 50

The policy starts from the SFT checkpoint and the reference is that same checkpoint (or
`ref_model_name_or_path`), loaded once more and kept frozen; with LoRA, TRL uses the adapter-free base as
the reference instead of a second copy. Writes the model + tokenizer (HF format) and `metrics.json`
(loss curve, reward accuracy and margin curves, tokens/s) to `output_dir`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from training.policy.pipes_report import StageReporter
from training.policy.stage_runner import (
    MetricsRecorder,
    StageConfig,
    finish_stage,
    load_train_dataset,
    quiet_console,
    stage_main,
    trl_args,
)

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
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    from engine.policy import load_model, load_tokenizer

    cfg.require_inputs()
    started = time.perf_counter()
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg)
    ref_model = None
    if not cfg.use_lora:
        same = cfg.ref_model_name_or_path in (None, cfg.model_name_or_path)
        ref_cfg = replace(
            cfg,
            model_name_or_path=cfg.ref_model_name_or_path or cfg.model_name_or_path,
            gguf_file=cfg.gguf_file if same else None,
        )
        # Loaded explicitly: TRL would otherwise rebuild it from the config's path, which fails for GGUF files.
        ref_model = load_model(ref_cfg).eval()
    dataset = load_train_dataset(cfg.dataset_path, ["prompt", "chosen", "rejected"], cfg.max_samples)

    args = trl_args(
        DPOConfig,
        cfg,
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        max_length=cfg.max_length,
        include_num_input_tokens_seen="non_padding",
    )
    recorder = MetricsRecorder(
        reporter,
        keys=("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "grad_norm"),
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.peft_config(),
        callbacks=[recorder],
    )
    quiet_console(trainer)
    output = trainer.train()
    return finish_stage(
        "dpo",
        cfg,
        trainer,
        tokenizer,
        output,
        recorder,
        started,
        extra={
            "dataset_rows": len(dataset),
            "reference": cfg.ref_model_name_or_path or cfg.model_name_or_path,
            "final_reward_accuracy": _last(recorder.curves["rewards/accuracies"]),
            "final_reward_margin": _last(recorder.curves["rewards/margins"]),
        },
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main("dpo", DPORunConfig, run_dpo, argv)


if __name__ == "__main__":
    raise SystemExit(main())
