"""What the SFT, DPO and GRPO scripts share when they run: dataset loading, the TRL config, metrics, the staged
save and the command line.

Each stage script stays a short top-to-bottom recipe (load, configure TRL, train, save); the plumbing that
would otherwise be copied three times lives here, and the settings in `training.policy.stage_config`.

Under accelerate or torchrun every rank runs the stage; saving is collective (FSDP and DeepSpeed gather the
sharded weights) and only the main process writes files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from pipeline.device import describe_device, trainer_device_kwargs
from pipeline.lake import default_home, replace_dir
from pipeline.locks import writer_lock
from training.cards import write_model_card
from training.policy.pipes_report import StageReporter, stage_reporting
from training.policy.stage_config import StageConfig, parse_config, read_trl_overrides


def load_train_dataset(path: str, columns: Sequence[str], max_samples: int | None = None, optional: Sequence[str] = ()):
    """The dataset at `path` (or `path/dataset`), with only the columns the trainer reads (`optional` ones
    when present)."""
    import datasets

    root = Path(path)
    folder = root / "dataset" if (root / "dataset").is_dir() else root
    if not folder.is_dir():
        raise ValueError(f"dataset_path={path!r} is not a directory; point it at a saved dataset")
    try:
        ds = datasets.load_from_disk(str(folder))
    except IndexError as exc:  # datasets cannot load a dataset saved with zero shards
        raise ValueError(f"dataset at {folder} is empty: nothing to train on") from exc
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"dataset at {folder} lacks columns {missing} (has {ds.column_names}); "
            "build it with the matching training.policy.datasets_build function"
        )
    if len(ds) == 0:
        raise ValueError(f"dataset at {folder} is empty: nothing to train on")
    ds = ds.select_columns(list(columns) + [c for c in optional if c in ds.column_names])
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    return ds


def _checkpointing_field() -> str:
    """transformers 5 renamed gradient_checkpointing (TRL defaults it to True) to activation_checkpointing."""
    from transformers import TrainingArguments

    names = TrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def dataset_content_hash(path: str | None) -> str | None:
    """The content hash a dataset builder recorded next to the dataset, for the generation's lineage."""
    manifest = Path(path) / "manifest.json" if path else None
    if manifest is None or not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("content_hash")


def _attempt_id() -> str:
    """One id per attempt of a stage, the same in every rank of a distributed launch.

    Never the PID alone: in a container every attempt is PID 1, and a killed attempt's half-written folder
    would be taken for this one's. torchrun (and accelerate, which launches through it) names each launch;
    otherwise the launcher process is named by its PID and start time, and a lone process draws a uuid.
    """
    if os.environ.get("FLYWHEEL_STAGE_ATTEMPT"):
        return os.environ["FLYWHEEL_STAGE_ATTEMPT"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
        if run_id and run_id != "none":
            return run_id
        # the ranks of one launch are children of one launcher process
        launcher = os.getppid()
        try:
            started = Path(f"/proc/{launcher}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            started = "0"
        return f"{launcher}-{started}"
    return _PROCESS_ATTEMPT


_PROCESS_ATTEMPT = uuid.uuid4().hex
# per output folder: (staging folder, the held lock) of this process's attempt
_STAGING: dict[Path, tuple[Path, ExitStack]] = {}


def staging_output(cfg: StageConfig) -> Path:
    """The folder a stage writes into before its output is complete: beside `output_dir`, named for this
    attempt (the ranks of one distributed launch share it), and renamed onto `output_dir` only by
    `finish_stage`. A stage killed half-way (kill -9 during DPO) so leaves nothing where the next stage reads.

    One attempt of a stage's output at a time: the main process holds a lock on `output_dir` (under
    FLYWHEEL_HOME) until `finish_stage`; a second attempt waits for it, then is refused (`WriterBusy`). Under
    that lock every other staging folder of `output_dir` is a dead attempt's, and is removed.
    """
    out = Path(cfg.output_dir)
    if out in _STAGING:
        return _STAGING[out][0]
    out.parent.mkdir(parents=True, exist_ok=True)
    own = out.with_name(f".{out.name}.tmp-{_attempt_id()}")
    held = ExitStack()
    if int(os.environ.get("RANK", "0")) == 0:
        key = f"{out.name}-{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:12]}"
        held.enter_context(writer_lock(default_home(), "stage_output", key))
        for stale in out.parent.glob(f".{out.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    own.mkdir(exist_ok=True)
    _STAGING[out] = (own, held)
    return own


def release_output(cfg: StageConfig) -> None:
    """Release the lock `staging_output` took on `cfg.output_dir` (done by `finish_stage`)."""
    entry = _STAGING.pop(Path(cfg.output_dir), None)
    if entry is not None:
        entry[1].close()


def trainer_kwargs(cfg: StageConfig) -> dict[str, Any]:
    """TrainingArguments fields common to the three TRL configs."""
    return {
        "output_dir": str(staging_output(cfg)),
        "max_steps": cfg.max_steps,
        "num_train_epochs": cfg.num_train_epochs,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": cfg.warmup_steps,
        "logging_steps": cfg.logging_steps,
        "seed": cfg.seed,
        _checkpointing_field(): cfg.gradient_checkpointing,
        # Only the final model is kept: intermediate checkpoints of a short stage cost disk and time.
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **trainer_device_kwargs(cfg.device),
    }


def trl_args(config_cls, cfg: StageConfig, **stage_kwargs: Any):
    """`config_cls` (a TRL config) from the common fields, the stage's own `stage_kwargs`, then `cfg.trl_config`."""
    return config_cls(**{**trainer_kwargs(cfg), **stage_kwargs, **read_trl_overrides(cfg.trl_config, config_cls)})


class MetricsRecorder(TrainerCallback):
    """Keeps every logged value by step (the loss curve and stage-specific curves) and reports progress."""

    def __init__(self, reporter: StageReporter | None = None, keys: Sequence[str] = ("loss",)) -> None:
        self.reporter = reporter
        self.keys = tuple(keys)
        self.curves: dict[str, list[dict[str, float]]] = {k: [] for k in self.keys}

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        for key in self.keys:
            if key in logs and logs[key] is not None:
                self.curves[key].append({"step": state.global_step, "value": round(float(logs[key]), 6)})
        if self.reporter is not None and "loss" in logs:
            shown = ", ".join(f"{k}={logs[k]:.4g}" for k in self.keys if isinstance(logs.get(k), (int, float)))
            self.reporter.progress(f"step {state.global_step}/{state.max_steps}: {shown}")


def quiet_console(trainer) -> None:
    """Progress goes through the reporter (stderr or Pipes); transformers' own printer would repeat every log."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def save_policy(trainer, tokenizer, cfg: StageConfig, folder: Path) -> None:
    """Final model + tokenizer in HF format into `folder`; LoRA adapters merged unless `merge_lora` is false."""
    if trainer.args.world_size > 1:
        _save_distributed(trainer, tokenizer, cfg, folder)
        return
    model = trainer.model
    if cfg.use_lora and cfg.merge_lora and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _save_distributed(trainer, tokenizer, cfg: StageConfig, folder: Path) -> None:
    """Every rank takes part in `save_model` (it gathers FSDP / DeepSpeed shards); the main process writes.

    LoRA adapters cannot be merged into sharded weights: they are saved aside, and the main process merges
    them into the base model on CPU and writes a plain checkpoint, without the adapter files (transformers
    would apply an adapter found beside the weights a second time on load).
    """
    merge = cfg.use_lora and cfg.merge_lora
    target = folder / ".adapter" if merge else folder
    trainer.save_model(str(target))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(folder)
        if merge:
            from peft import AutoPeftModelForCausalLM

            extra = {"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}
            peft_model = AutoPeftModelForCausalLM.from_pretrained(
                str(target), trust_remote_code=cfg.trust_remote_code, **extra
            )
            peft_model.merge_and_unload().save_pretrained(folder)
            shutil.rmtree(target)
    trainer.accelerator.wait_for_everyone()


def finish_stage(
    stage: str,
    cfg: StageConfig,
    trainer,
    tokenizer,
    train_output,
    recorder: MetricsRecorder,
    started: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save the policy and metrics.json into the staging folder, rename it onto `output_dir`, return the metrics."""
    staging = staging_output(cfg)
    save_policy(trainer, tokenizer, cfg, staging)
    runtime = float(train_output.metrics.get("train_runtime") or 0.0)
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    metrics = {
        "stage": stage,
        "world_size": int(trainer.args.world_size),
        "output_dir": str(cfg.output_dir),
        "steps": int(trainer.state.global_step),
        "train_loss": round(float(train_output.training_loss), 6),
        "loss_curve": recorder.curves.get("loss", []),
        "train_runtime_s": round(runtime, 3),
        "wall_s": round(time.perf_counter() - started, 3),
        "train_tokens": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if runtime > 0 else None,
        "device": describe_device(cfg.device),
        "use_lora": cfg.use_lora,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "curves": {k: v for k, v in recorder.curves.items() if k != "loss"},
        "dataset_content_hash": dataset_content_hash(cfg.dataset_path),
        **(extra or {}),
        "config": asdict(cfg),
    }
    if trainer.is_world_process_zero():
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        write_model_card(
            staging,
            title=f"CharacterFlywheel {stage} policy",
            base_model=str(cfg.model_name_or_path),
            data_hashes={"dataset": metrics["dataset_content_hash"]},
            metrics={k: v for k, v in metrics.items() if k not in ("config", "curves", "loss_curve", "output_dir")},
            summary=f"The policy after the {stage} stage, trained with TRL on the dataset named by its content hash.",
        )
        replace_dir(staging, Path(cfg.output_dir))
    release_output(cfg)
    return metrics


def stage_main(stage: str, cls, run: Callable[..., dict[str, Any]], argv: Sequence[str] | None = None) -> int:
    """Command-line entry of a stage: parse settings, run, report (through Dagster Pipes when launched by it)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' notes on its own API renames, hit by the calls TRL makes, say nothing about the run
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    with stage_reporting(stage) as reporter:
        cfg = parse_config(cls, argv, defaults=reporter.extras_config())
        reporter.progress(f"starting on {describe_device(cfg.device)}; output_dir={cfg.output_dir}")
        metrics = run(cfg, reporter=reporter)
        reporter.materialized(metrics)
    return 0
