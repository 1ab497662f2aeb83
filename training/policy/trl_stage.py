"""One TRL training stage, start to finish: the run SFT, DPO and GRPO share.

Each stage checks its settings, seeds, loads the policy, its tokenizer and the dataset columns its trainer
reads, builds the TRL config and trainer, trains, and saves the policy with its metrics. Only what a stage
hands the trainer differs, and the stage says it in a `Wiring` once the policy and dataset are loaded: the
stage's TRL config fields, extra trainer arguments (DPO's reference model, GRPO's reward functions), the
dataset reshaped for the trainer (SFT's prompt/completion fallback), the logged values kept as curves, and
the figures its metrics.json adds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from training.policy.pipes_report import StageReporter
from training.policy.stage_config import StageConfig
from training.policy.stage_runner import MetricsRecorder, finish_stage, load_train_dataset, quiet_console, trl_args

Curves = dict[str, list[dict[str, float]]]


class Loaded(NamedTuple):
    """What a stage's wiring is built from."""

    tokenizer: Any
    model: Any
    dataset: Any
    prepared: Any  # what the stage's `prepare` returned before the seed was set (None without one)


@dataclass
class Wiring:
    """What one stage hands its TRL trainer beyond what every stage does."""

    config: dict[str, Any]  # fields of the stage's TRL config beyond the common ones (`trainer_kwargs`)
    curves: tuple[str, ...]  # logged values kept by step, for metrics.json and the progress lines
    trainer: dict[str, Any] = field(default_factory=dict)  # trainer arguments beyond model, data and callbacks
    dataset: Any = None  # the dataset as the trainer reads it; None: as loaded
    metrics: Callable[[Curves], dict[str, Any]] | None = None  # the stage's own figures, from the curves


def run_trl_stage(
    trainer: str,
    cfg: StageConfig,
    reporter: StageReporter | None,
    columns: Sequence[str],
    wire: Callable[[Loaded], Wiring],
    *,
    optional_columns: Sequence[str] = (),
    padding_side: str = "right",
    prepare: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Train `cfg`'s policy with TRL's `{trainer}Trainer` and `{trainer}Config` ("SFT", "DPO", "GRPO") on the
    dataset `columns`; returns the metrics written beside the saved policy.

    `prepare` runs before the seed is set (GRPO loads its reward model there, so that loading it leaves the
    policy's random stream as it was); `wire` then gives what the stage adds once everything is loaded.
    """
    import trl
    from transformers import set_seed

    from engine.policy import load_model, load_tokenizer

    cfg.require_inputs()
    started = time.perf_counter()
    prepared = prepare() if prepare is not None else None
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg, padding_side=padding_side)
    model = load_model(cfg)
    dataset = load_train_dataset(cfg.dataset_path, columns, cfg.max_samples, optional=optional_columns)
    wiring = wire(Loaded(tokenizer, model, dataset, prepared))
    if wiring.dataset is not None:
        dataset = wiring.dataset

    recorder = MetricsRecorder(reporter, keys=wiring.curves)
    trl_trainer = getattr(trl, f"{trainer}Trainer")(
        model=model,
        args=trl_args(getattr(trl, f"{trainer}Config"), cfg, **wiring.config),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.peft_config(),
        callbacks=[recorder],
        **wiring.trainer,
    )
    quiet_console(trl_trainer)
    output = trl_trainer.train()
    extra = {"dataset_rows": len(dataset), **(wiring.metrics(recorder.curves) if wiring.metrics else {})}
    return finish_stage(trainer.lower(), cfg, trl_trainer, tokenizer, output, recorder, started, extra=extra)
