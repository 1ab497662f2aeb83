"""How a curation asset publishes a step's result: one helper for every daily curation asset.

`publish` writes the kept rows (cast onto their contract in `pipeline/schema.py`, so every daily
table carries `dagster/column_schema`), the step's drops (its own part of the `drops` table, so
re-running a step replaces only its drops), the metadata (row count, schema, preview, the typed
counters, drop reasons) and the conservation check (rows in = kept + dropped, id by id). The data
version of the materialization is the content hash of what was written, so a re-run that writes
the same rows is shown as the same data.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import dagster as dg
import polars as pl

from assets.checks import conservation
from assets.metadata import counts_table, preview_table, table_metadata
from pipeline import schema
from pipeline.crash import crash_point
from pipeline.digest import file_digest
from pipeline.lake import Lake
from pipeline.locks import writer_lock
from pipeline.step import StepResult


@dataclass
class Published:
    """What `publish` wrote and reports: yield `materialization`, then `checks`."""

    materialization: dg.MaterializeResult
    checks: list[dg.AssetCheckResult] = field(default_factory=list)


def one_writer(fn: Callable) -> Callable:
    """Run a daily asset's body under the lock of its step and day (`pipeline.locks`): a second run of the
    same day waits for the first, then reads what it wrote, and is refused (`WriterBusy`) if it waits too
    long. Put it under `@dg.asset`; the asset takes the `settings` resource (where the locks live)."""
    if not inspect.isgeneratorfunction(fn):
        raise TypeError(f"one_writer wraps assets that yield their results; {fn.__name__} returns them")

    @functools.wraps(fn)
    def body(context: dg.AssetExecutionContext, *args, **kwargs):
        home = kwargs["settings"].home
        # the op's name: one lock for a multi-asset step (ingest writes two tables from one read)
        with writer_lock(home, context.op_def.name, context.partition_key, owner=context.run_id):
            yield from fn(context, *args, **kwargs)

    return body


def drop_reasons(drops: pl.DataFrame) -> dict[str, int]:
    if drops.is_empty():
        return {}
    return dict(drops.group_by("reason_code").len().sort("len", descending=True).iter_rows())


def write_drops(lake: Lake, day: date, stage: str, drops: pl.DataFrame) -> None:
    lake.write("drops", day, schema.conform(drops, schema.DROPS), part=stage, replace=False)


def publish(
    lake: Lake,
    day: date,
    asset: str,
    steps: dict[str, StepResult],
    *,
    contract: pl.Schema | None,
    rows_in: pl.DataFrame | None = None,
    id_column: str = "prompt_id",
    metadata: dict | None = None,
) -> Published:
    """Write the last step's kept rows as the day's partition of `asset`, each step's drops under its
    stage name, and (with `rows_in`) the conservation check over all the steps together."""
    last = list(steps.values())[-1]
    kept = schema.conform(last.kept, contract) if contract is not None else last.kept
    path = lake.write(asset, day, kept)
    crash_point("publish")
    meta = table_metadata(kept, contract)
    all_drops = []
    for stage, result in steps.items():
        write_drops(lake, day, stage, result.drops)
        all_drops.append(result.drops)
        prefix = f"{stage}." if len(steps) > 1 else ""
        meta.update({prefix + k: v for k, v in result.counters.as_dict().items() if k != "rows_kept"})
    drops = pl.concat(all_drops)
    meta["drops_by_reason"] = counts_table(drop_reasons(drops))
    if drops.height:
        meta["drop_examples"] = preview_table(drops.select("row_id", "kept_id", "detail"), max_rows=5)
    meta.update(metadata or {})
    checks = []
    if rows_in is not None:
        label = "+".join(steps)
        checks.append(conservation(asset, label, rows_in, kept, drops.with_columns(stage=pl.lit(label)), id_column))
    return Published(dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(file_digest(path))), checks)
