"""Stage 1 of herding: supervised fine-tuning on the rejection-sampled SFT mixture.

    python -m training.policy.sft --model_name_or_path data/models/gen0 --dataset_path data/datasets/sft \
        --output_dir data/models/gen1-sft --max_steps 200

The loss covers assistant tokens only: the tiny policy's chat template marks them with `{% generation %}`, and
TRL can patch the templates of well-known model families. For any other template the conversations are
turned into prompt/completion pairs (history -> final reply), so the loss still falls on the reply alone;
`metrics.json` records which mask was used. Writes the model + tokenizer (HF format) and `metrics.json` to
`output_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from training.policy.pipes_report import StageReporter
from training.policy.stage_config import StageConfig
from training.policy.stage_runner import stage_main
from training.policy.trl_stage import Loaded, Wiring, run_trl_stage


@dataclass
class SFTRunConfig(StageConfig):
    output_dir: str = field(default="data/models/sft", metadata={"help": "Where the SFT policy is written."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Train on assistant tokens only (false: on the whole conversation)."}
    )
    packing: bool = field(default=False, metadata={"help": "Pack several short examples into one sequence."})


def assistant_mask_supported(tokenizer) -> bool:
    """Whether TRL can compute an assistant-token mask with this tokenizer's chat template (as is or patched)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except (ValueError, TypeError):
        return False


def to_prompt_completion(example: dict) -> dict:
    """history -> prompt, final assistant turn -> completion: loss on the reply without template markers."""
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def run_sft(cfg: SFTRunConfig, reporter: StageReporter | None = None) -> dict[str, Any]:
    """Fine-tune `cfg.model_name_or_path` on the `messages` dataset at `cfg.dataset_path`; returns the metrics."""

    def wire(loaded: Loaded) -> Wiring:
        dataset, loss_mask = None, "assistant_only" if cfg.assistant_only_loss else "full_sequence"
        if cfg.assistant_only_loss and not assistant_mask_supported(loaded.tokenizer):
            dataset = loaded.dataset.map(to_prompt_completion, remove_columns=["messages"])
            loss_mask = "completion_only"
        return Wiring(
            config={
                "max_length": cfg.max_length,
                "packing": cfg.packing,
                "assistant_only_loss": loss_mask == "assistant_only",
                "completion_only_loss": True if loss_mask == "completion_only" else None,
                "include_num_input_tokens_seen": "non_padding",
            },
            curves=("loss", "mean_token_accuracy", "grad_norm", "learning_rate"),
            dataset=dataset,
            metrics=lambda curves: {"loss_mask": loss_mask},
        )

    return run_trl_stage("SFT", cfg, reporter, ["messages"], wire)


def main(argv: list[str] | None = None) -> int:
    return stage_main("sft", SFTRunConfig, run_sft, argv)


if __name__ == "__main__":
    raise SystemExit(main())
