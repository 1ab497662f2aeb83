"""What exact and near dedup share: how a text is seen, how a day is decided against the days before it, and
the drops frame both write (`pipeline.dedup_exact`, `pipeline.dedup_near`).

Both steps see the text through `pipeline.text_hash.normalize_text` (case, punctuation, whitespace and
Unicode forms ignored; a null text normalizes like an empty one), applied before hashing and shingling.

Cross-day (both steps), with a `pipeline.history.DayChain`: a day is decided against the rows kept
on the days before it and nothing else, so the result does not depend on the order in which days
were materialized; the day then commits what it kept. Each run carries a sorted key file
(`pipeline.keyfile`) that the next days search instead of holding the history in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from pipeline import schema


def dedup_drops(
    day: pl.Series,
    row_id: Sequence[str],
    reason: str,
    stage: str,
    kept_id: Sequence[str],
    detail: Sequence[str],
) -> pl.DataFrame:
    n = len(row_id)
    return schema.drops_frame(
        {
            "day": day.cast(pl.Date),
            "stage": pl.Series([stage] * n, dtype=pl.Utf8),
            "row_id": pl.Series(list(row_id), dtype=pl.Utf8),
            "reason_code": pl.Series([reason] * n, dtype=pl.Utf8),
            "kept_id": pl.Series(list(kept_id), dtype=pl.Utf8),
            "detail": pl.Series(list(detail), dtype=pl.Utf8),
        }
    )


def check_columns(df: pl.DataFrame, fn: str, **cols: str | None) -> None:
    for arg, col in cols.items():
        if col is not None and col not in df.columns:
            raise ValueError(f"{fn}: frame has no column {col!r} for {arg} (columns: {df.columns}); pass {arg}=")


def day_series(df: pl.DataFrame, day_col: str | None) -> pl.Series:
    if day_col is not None and day_col in df.columns:
        return df.get_column(day_col).cast(pl.Date)
    return pl.Series("day", [None] * df.height, dtype=pl.Date)


def help_text(text: str) -> dict[str, str]:
    return {"help": text}


def one_day(days: pl.Series, fn: str, day: date | None = None) -> date:
    """The one day of a frame decided against a history (`day` names it, and must when the frame is empty)."""
    found = days.drop_nulls().unique().to_list()
    if days.null_count() or len(found) > 1 or (day is not None and found and found != [day]):
        raise ValueError(f"{fn}: cross-day history needs the rows of exactly one day, got days {sorted(found)}")
    if not found and day is None:
        raise ValueError(f"{fn}: an empty frame cannot tell its day: pass day= to commit it to the history")
    return day if day is not None else found[0]
