"""Turn the quality library's results into Dagster asset check results.

Each table asset declares its checks as `check_specs` and yields their results right after it
writes its partition: one read of the data, one suite validation, many check results. Checks
guarding anything that feeds training are blocking, so a failure (severity ERROR) stops every
downstream asset of the run.
"""

from collections.abc import Sequence
from datetime import date
from typing import Any

import dagster as dg
import polars as pl

from pipeline.lake import Lake
from quality.contracts import check_stage_conservation
from quality.daily import save_suite_result
from quality.outcomes import CheckOutcome, SuiteResult
from quality.suites import validate_table

SUITE = "suite"


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key.endswith("_md") and isinstance(value, str):
            out[key] = dg.MetadataValue.md(value)
        elif isinstance(value, (dict, list)):
            out[key] = dg.MetadataValue.json(value)
        elif value is None:
            out[key] = dg.MetadataValue.text("-")
        else:
            out[key] = value
    return out


def result(asset: str, name: str, outcome: SuiteResult | CheckOutcome) -> dg.AssetCheckResult:
    args = outcome.as_check()
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=bool(args["passed"]),
        severity=dg.AssetCheckSeverity(args["severity"]),
        description=args["description"],
        metadata=_metadata(args["metadata"]),
    )


def suite_spec(asset: str, table: str, blocking: bool) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SUITE,
        asset=asset,
        blocking=blocking,
        description=f"Great Expectations suite `{table}`: types, nulls, value sets, lengths, ids, row-count and "
        "distribution bands.",
    )


def conservation_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "conservation",
        asset=asset,
        blocking=True,
        description="Rows in = rows out + rows dropped with a reason code, id by id.",
    )


def run_suite(
    asset: str,
    table: str,
    df: pl.DataFrame,
    row_history: Sequence[int] | None = None,
    *,
    lake: Lake | None = None,
    day: date | None = None,
    lake_table: str | None = None,
) -> tuple[SuiteResult, dg.AssetCheckResult]:
    """Validate `df` with the suite `table` (`row_history`: the previous days' row counts, see
    `quality.row_counts`); with `lake` and `day`, keep the result for the day's report (`lake_table`
    names the partition it describes, default `table`)."""
    outcome = validate_table(table, df, row_history=row_history)
    if lake is not None and day is not None:
        save_suite_result(lake, lake_table or table, day, outcome)
    return outcome, result(asset, SUITE, outcome)


def conservation(
    asset: str, stage: str, rows_in: pl.DataFrame, rows_out: pl.DataFrame, drops: pl.DataFrame, id_column: str
) -> dg.AssetCheckResult:
    outcome = check_stage_conservation(stage, rows_in=rows_in, rows_out=rows_out, drops=drops, id_column=id_column)
    return result(asset, "conservation", outcome)
