"""Progress and results of a training script, reported to Dagster only when Dagster launched it through Pipes.

The scripts stay plain programs: `dagster_pipes` is a small dependency-free package (not Dagster itself), and
it is only opened when the launching process set the Pipes environment variables. Otherwise progress goes to
stderr and nothing else happens, so the same script runs by hand, in tests and as an asset.

Under a multi-process launcher (accelerate, torchrun) every rank inherits the Pipes variables. All ranks read
the launching asset's config from the Pipes context, but only rank 0 opens the message channel: one stream of
progress and one materialization per stage, whatever the number of processes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


def process_rank() -> int:
    """This process's global rank under accelerate or torchrun (both set RANK); 0 for a plain process."""
    value = os.environ.get("RANK") or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable RANK={value!r} is not an integer rank") from None


def under_pipes() -> bool:
    """True when this process was launched by a Dagster Pipes client (its context env var is set)."""
    try:
        from dagster_pipes import PipesEnvVarParamsLoader
    except ImportError:
        return False
    return PipesEnvVarParamsLoader().is_dagster_pipes_process()


def pipes_extras() -> dict[str, Any]:
    """The Pipes context's extras, read without opening the message channel (for ranks other than 0)."""
    from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader

    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        return dict(data.get("extras") or {})


def pipes_metadata(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics as Pipes metadata: scalars are inferred, lists and dicts are sent as JSON values."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, (dict, list, tuple)):
            out[key] = {"raw_value": json.loads(json.dumps(value, default=str)), "type": "json"}
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = str(value)
    return out


class StageReporter:
    """Where a stage sends progress lines and its final metrics."""

    def __init__(self, context: Any = None, stage: str = "training", extras: Mapping[str, Any] | None = None) -> None:
        self.context = context
        self.stage = stage
        self._extras = dict(extras or {})

    def extras_config(self) -> dict[str, Any]:
        """A config mapping passed by the launching asset as Pipes extras under `config`, if any."""
        extras = self.context.extras if self.context is not None else self._extras
        value = extras.get("config") or {}
        return dict(value) if isinstance(value, Mapping) else {}

    def progress(self, message: str) -> None:
        if self.context is not None:
            self.context.log.info(message)
        else:
            print(f"[{self.stage}] {message}", file=sys.stderr, flush=True)

    def materialized(self, metrics: Mapping[str, Any]) -> None:
        if self.context is not None:
            try:
                self.context.report_asset_materialization(metadata=pipes_metadata(metrics))
            except Exception as exc:  # launched for an op (no asset in scope): the metrics still reach the log
                self.context.log.warning(
                    f"no asset materialization reported ({exc}); metrics: " + json.dumps(metrics, default=str)[:4000]
                )
        else:
            print(
                f"[{self.stage}] done: "
                + json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, default=str),
                file=sys.stderr,
                flush=True,
            )


@contextmanager
def stage_reporting(stage: str) -> Iterator[StageReporter]:
    """A reporter bound to the Pipes context when launched through Pipes (rank 0 only), else to stderr."""
    rank = process_rank()
    if not under_pipes():
        yield StageReporter(None, stage if rank == 0 else f"{stage}:rank{rank}")
        return
    if rank != 0:
        yield StageReporter(None, f"{stage}:rank{rank}", extras=pipes_extras())
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as context:
        yield StageReporter(context, stage)
