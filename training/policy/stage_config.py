"""The settings of the SFT, DPO and GRPO stages and how they are read.

Settings are plain dataclasses parsed by transformers' `HfArgumentParser`, so `--help` lists every field with
its help string, and a JSON file (`--config`) can set any of them with flags overriding it. A second file
(`trl_config`, YAML or JSON) holds fields of TRL's own config class (`report_to`, `bf16`, `fsdp`, `deepspeed`,
`optim`, ...) and passes through to it whole, less what would move the stage's files or send anything out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.policy import PolicyConfig


@dataclass
class StageConfig(PolicyConfig):
    """Settings every training stage has; the policy fields (model, LoRA, device) come from PolicyConfig."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Directory written by a dataset builder (`BuildResult.save`) or by `datasets.Dataset.save_to_disk`."
        },
    )
    output_dir: str = field(
        default="data/models/stage", metadata={"help": "Where the final model, tokenizer and metrics.json are written."}
    )
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; -1 trains for num_train_epochs."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the dataset when max_steps is -1."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Examples per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup steps."})
    max_length: int = field(default=512, metadata={"help": "Longest tokenized example; longer ones are truncated."})
    max_samples: int | None = field(default=None, metadata={"help": "Train on at most this many dataset rows."})
    logging_steps: int = field(default=1, metadata={"help": "Record the loss every N steps."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, shuffling and sampling."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations to save memory (slower; for large models)."}
    )
    trl_config: str | None = field(
        default=None,
        metadata={
            "help": "YAML or JSON file of TRL config fields (SFTConfig / DPOConfig / GRPOConfig), applied over the "
            "stage's settings: report_to, bf16, optim, fsdp, deepspeed, ..."
        },
    )
    merge_lora: bool = field(
        default=True,
        metadata={
            "help": "With use_lora, merge adapters into the weights before saving, so the next "
            "stage loads a plain checkpoint; false saves the adapter only."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps={self.max_steps}: use a positive count, or -1 to train by epochs")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
        if self.learning_rate <= 0 or self.max_length < 16 or self.logging_steps < 1:
            raise ValueError("learning_rate must be > 0, max_length >= 16 and logging_steps >= 1")

    def require_inputs(self) -> None:
        if not self.model_name_or_path:
            raise ValueError("model_name_or_path is not set: point it at the policy to train (a directory or name)")
        if not self.dataset_path:
            raise ValueError("dataset_path is not set: point it at a dataset built by training.policy.datasets_build")


# Where a stage's files go is the pipeline's business: a TRL file that moved them would break the lineage.
_STAGE_OWNED_TRL_FIELDS = frozenset({"output_dir"})
# Training runs offline on private data: nothing it makes may leave the cluster, and no remote code may run.
# Uploads to a hub, experiment trackers (report_to), and credentials or remote code in model init kwargs.
_EGRESS_TRL_PREFIXES = ("push_to_hub", "trackio")
_EGRESS_TRL_KEYS = frozenset({"token", "use_auth_token", "hub_token", "trust_remote_code"})


def _egress_fields(values: dict[str, Any]) -> list[str]:
    """The TRL fields in `values` that would send data, models or metrics out, or run remote code."""
    found = []
    for name, value in values.items():
        risky = name.startswith(_EGRESS_TRL_PREFIXES) or "hub" in name or name == "trust_remote_code"
        if risky and value not in (None, False, "", []):
            found.append(name)
        elif name == "report_to" and value not in ("none", ["none"], [], None):
            found.append(f"report_to={value!r}")
        elif isinstance(value, dict):
            found += [f"{name}.{k}" for k, v in value.items() if k in _EGRESS_TRL_KEYS and v not in (None, False)]
    return found


def read_trl_overrides(path: str | None, config_cls) -> dict[str, Any]:
    """The TRL fields in the YAML/JSON file at `path`, checked against `config_cls` (empty when `path` is None)."""
    if not path:
        return {}
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"trl_config={path!r} is not a file: point it at a YAML or JSON file of TRL fields")
    values = yaml.safe_load(file.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"trl_config={path!r} must hold a mapping of TRL field names to values")
    names = {f.name for f in fields(config_cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"trl_config={path!r} sets {unknown}, which are not fields of {config_cls.__name__}")
    owned = sorted(set(values) & _STAGE_OWNED_TRL_FIELDS)
    if owned:
        raise ValueError(f"trl_config={path!r} sets {owned}: set them as stage settings, not TRL fields")
    egress = _egress_fields(values)
    if egress:
        raise ValueError(
            f"trl_config={path!r} sets {egress}: training never pushes to a hub, reports to a tracker, uses hub "
            "credentials or runs remote code; remove them (or set report_to: none). Curves are in the stage's "
            "Dagster metadata and the model card"
        )
    return values


def parse_config(cls, argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None):
    """A `cls` from (lowest to highest precedence) its defaults, `defaults`, a `--config` JSON file and flags."""
    import argparse

    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    merged = dict(defaults or {})
    if known.config:
        merged.update(json.loads(Path(known.config).read_text()))
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(merged) - names)
    if unknown:
        raise ValueError(f"unknown settings {unknown} for {cls.__name__}; valid ones: {sorted(names)}")
    parser = HfArgumentParser(cls)
    parser.add_argument("--config", default=None, help="JSON file of settings; flags override it.")
    parser.set_defaults(**merged)
    # The parser returns the dataclass first, then a namespace holding `--config`.
    return parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)[0]
