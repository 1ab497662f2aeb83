"""Gather one day's data-quality picture from the lake: counts per stage, drop reasons, PII, dup
rates, topic shares and drift against the previous day, and every suite and contract check.

The lake is the only input, so the report can be rebuilt for any past day without re-running a
stage. Tables a day has not produced yet are reported as missing, not as failures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.ingest import FILE_REASON_CODES
from pipeline.lake import Lake, atomic_write_bytes
from pipeline.prompts import TURN_DROP_REASONS
from quality.contracts import (
    check_ingest_stats,
    check_prompt_history,
    check_split_disjoint,
    check_stage_conservation,
)
from quality.outcomes import CheckOutcome, SuiteResult
from quality.report import ReportFiles, write_report
from quality.report_inputs import ReportInputs, StageCount
from quality.row_counts import row_count_history
from quality.suites import validate_table

# (stage name in the report, input table, output table, stage names in `drops`)
STAGES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("prompts", "scrubbed_conversations", "static_prompts", ("prompts",)),
    ("exact_dedup", "static_prompts", None, ("exact_dedup",)),  # type: ignore[arg-type]
    ("near_dedup", None, "deduped_prompts", ("near_dedup",)),  # type: ignore[arg-type]
    ("semantic_dedup", "deduped_prompts", "unique_prompts", ("semdedup",)),
    ("sampling", "unique_prompts", "prompts", ("sampling",)),
)

# suites run for the report: (suite name, lake table)
SUITES = (
    ("conversations", "conversations"),
    ("quarantine", "quarantine"),
    ("prompts", "prompts"),
    ("clusters", "clusters"),
)


def suite_result_path(lake: Lake, table: str, day: date) -> Path:
    return lake.home / "state" / "suite_results" / table / f"day={day.isoformat()}.json"


def save_suite_result(lake: Lake, table: str, day: date, result: SuiteResult) -> None:
    """Keep the result of a suite run on a lake partition, so the report need not validate it again. As JSON:
    the lake's volume is writable by training pods, and a pickle read from it would run whatever it holds."""
    atomic_write_bytes(suite_result_path(lake, table, day), json.dumps(result.to_json()).encode())


def validate_partition(lake: Lake, suite: str, table: str, day: date, df: pl.DataFrame) -> SuiteResult:
    """The suite's result on a partition: the one saved when the partition was checked, if it is newer
    than the partition's files, else a fresh validation."""
    path = suite_result_path(lake, table, day)
    files = lake.files(table, day)
    if path.is_file() and files and path.stat().st_mtime >= max(f.stat().st_mtime for f in files):
        try:
            cached = SuiteResult.from_json(json.loads(path.read_bytes()))
            if cached.table == suite:
                return cached
        except ValueError:  # not JSON, or written by another version of the code: validate again
            pass
    return validate_table(suite, df, row_history=row_count_history(lake, table, day))


def _read(lake: Lake, table: str, day: date) -> pl.DataFrame | None:
    return lake.read(table, day) if lake.exists(table, day) else None


def _reasons(df: pl.DataFrame | None, column: str = "reason_code") -> dict[str, int]:
    if df is None or df.is_empty():
        return {}
    return {k: int(v) for k, v in df.group_by(column).len().sort("len", descending=True).iter_rows()}


def unread_files(quarantine: pl.DataFrame | None) -> list[tuple[str, str, str]]:
    """The files ingest refused or could not read to their end: its file-level quarantine rows."""
    if quarantine is None:
        return []
    rows = quarantine.filter(pl.col("reason_code").is_in(FILE_REASON_CODES))
    return list(rows.select("source_file", "reason_code", "detail").iter_rows())


def stage_counts(lake: Lake, day: date) -> tuple[list[StageCount], dict[str, float]]:
    """Rows in and out of each stage and its drops by reason; dup rates of exact, near, semantic dedup."""
    drops = _read(lake, "drops", day)
    stats = _read(lake, "ingest_stats", day)
    quarantine = _read(lake, "quarantine", day)
    conv = _read(lake, "conversations", day)
    out: list[StageCount] = []
    if stats is not None:
        out.append(
            StageCount(
                "ingest",
                int(stats["records_read"].sum()),
                conv.height if conv is not None else None,
                _reasons(quarantine),
            )
        )
    heights = {
        t: (df.height if (df := _read(lake, t, day)) is not None else None)
        for t in ("scrubbed_conversations", "static_prompts", "deduped_prompts", "unique_prompts", "prompts")
    }
    exact_drops = _reasons(drops.filter(pl.col("stage") == "exact_dedup")) if drops is not None else {}
    rates: dict[str, float] = {}
    for name, src, dst, drop_stages in STAGES:
        reasons = _reasons(drops.filter(pl.col("stage").is_in(drop_stages))) if drops is not None else {}
        if name == "exact_dedup":
            rows_in = heights["static_prompts"]
            rows_out = None if rows_in is None else rows_in - sum(reasons.values())
        elif name == "near_dedup":
            rows_in = (
                None if heights["static_prompts"] is None else heights["static_prompts"] - sum(exact_drops.values())
            )
            rows_out = heights["deduped_prompts"]
        else:
            rows_in, rows_out = heights.get(src), heights.get(dst)
        if name == "prompts":
            # the unit of this stage is a user turn; messages are its input table
            rows_in = (
                None if rows_out is None else rows_out + sum(v for k, v in reasons.items() if k in TURN_DROP_REASONS)
            )
        if rows_in is None and rows_out is None:
            continue
        out.append(StageCount(name, rows_in, rows_out, reasons))
        if name in ("exact_dedup", "near_dedup", "semantic_dedup") and rows_in:
            rates[name.split("_")[0]] = sum(reasons.values()) / rows_in
    return out, rates


def cluster_shares(
    lake: Lake, day: date, vectors_of: Callable[[date], tuple[pl.DataFrame, np.ndarray]] | None = None
) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """Today's topic shares, and the previous day's prompts spread over *today's* topics.

    Topics are fitted per day, so yesterday's cluster ids mean nothing today; assigning yesterday's
    prompts to today's nearest centroid makes the two share vectors comparable (PSI needs that).
    `vectors_of(day)` returns (frame with prompt_id, vectors) for a day's unique prompts.
    """
    clusters = _read(lake, "clusters", day)
    if clusters is None or clusters.is_empty():
        return None, None
    labels = [f"{cid}: {label}" for cid, label in zip(clusters["cluster_id"].to_list(), clusters["label"].to_list())]
    shares = dict(zip(labels, (float(s) for s in clusters["share"].to_list())))
    prev = lake.previous_day("unique_prompts", day)
    if prev is None or vectors_of is None or "centroid" not in clusters.columns:
        return shares, None
    _, vectors = vectors_of(prev)
    if not len(vectors):
        return shares, None
    centroids = np.asarray(clusters["centroid"].to_list(), dtype=np.float32)
    nearest = np.argmax(vectors @ centroids.T, axis=1)
    counts = np.bincount(nearest, minlength=len(labels)).astype(float)
    return shares, dict(zip(labels, (counts / counts.sum()).tolist()))


def text_lengths(lake: Lake, day: date) -> tuple[np.ndarray | None, np.ndarray | None]:
    def lengths(d: date | None) -> np.ndarray | None:
        df = _read(lake, "conversations", d) if d is not None else None
        return None if df is None else df["text"].str.len_chars().to_numpy()

    return lengths(day), lengths(lake.previous_day("conversations", day))


def checks(lake: Lake, day: date) -> list[SuiteResult | CheckOutcome]:
    """Every suite and contract the day's tables are held to."""
    out: list[SuiteResult | CheckOutcome] = []
    for suite, table in SUITES:
        df = _read(lake, table, day)
        if df is None:
            continue
        out.append(validate_partition(lake, suite, table, day, df))
    stats = _read(lake, "ingest_stats", day)
    if stats is not None:
        out.append(check_ingest_stats(stats, quarantine=_read(lake, "quarantine", day)))
    pool = _read(lake, "prompts", day)
    if pool is not None:
        out.append(check_prompt_history(pool))
        out.append(check_split_disjoint(pool))
    drops = _read(lake, "drops", day)
    if drops is not None:
        for stage, src, dst, drop_stage in (
            ("semdedup", "deduped_prompts", "unique_prompts", "semdedup"),
            ("sampling", "unique_prompts", "prompts", "sampling"),
        ):
            a, b = _read(lake, src, day), _read(lake, dst, day)
            if a is not None and b is not None:
                out.append(
                    check_stage_conservation(
                        stage,
                        rows_in=a,
                        rows_out=b,
                        drops=drops.filter(pl.col("stage") == drop_stage),
                        id_column="prompt_id",
                    )
                )
    return out


def gather(
    lake: Lake, day: date, vectors_of: Callable[[date], tuple[pl.DataFrame, np.ndarray]] | None = None
) -> ReportInputs:
    stages, rates = stage_counts(lake, day)
    stats = _read(lake, "ingest_stats", day)
    pii = _read(lake, "pii_counts", day)
    shares, previous = cluster_shares(lake, day, vectors_of)
    lengths, previous_lengths = text_lengths(lake, day)
    return ReportInputs(
        day=day,
        stages=stages or None,
        records_read=int(stats["records_read"].sum()) if stats is not None else None,
        quarantine_reasons=_reasons(_read(lake, "quarantine", day)) if stats is not None else None,
        unread_files=unread_files(_read(lake, "quarantine", day)),
        pii_counts=dict(zip(pii["pii_type"].to_list(), (int(n) for n in pii["items"].to_list())))
        if pii is not None
        else None,
        dup_rates=rates or None,
        cluster_shares=shares,
        previous_cluster_shares=previous,
        text_lengths=lengths,
        previous_text_lengths=previous_lengths,
        checks=checks(lake, day),
    )


def build_daily_report(
    lake: Lake, day: date, folder: Path, vectors_of: Callable[[date], tuple[pl.DataFrame, np.ndarray]] | None = None
) -> ReportFiles:
    """Write the day's report (index.html, summary.md, one page per suite) into `folder`."""
    return write_report(gather(lake, day, vectors_of), folder)
