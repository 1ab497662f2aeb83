"""The usual row count of a daily table, learnt from the table's own history.

Real traffic is uneven: the default replay's days range from 5k to 33k messages, so a band fixed to
yesterday's count (half to twice it) warns on many ordinary days and a person learns to ignore it.
The band here is centred on the median of the table's previous days and as wide as their spread: in
log space, the median plus or minus `row_band_sigmas` robust standard deviations (1.4826 x the median
absolute deviation), and never narrower than [median / `row_band_ratio`, median x `row_band_ratio`]
(5 by default), so a steady history does not make it hair-trigger. Until `row_history_min_days` (4) days
with rows are known there is no band: a few days cannot tell an uneven day from a broken one (a
history that starts on the replay's smallest day puts its largest beyond five times it). A day whose
count collapses (a source that stopped delivering, a filter that ate the day) falls far outside it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import date

import polars as pl

from pipeline.lake import Lake
from quality.suite_config import SuiteConfig

# the median absolute deviation of a normal sample, in standard deviations
MAD_TO_SIGMA = 1.4826


def row_count_history(lake: Lake, table: str, day: date, config: SuiteConfig | None = None) -> list[int]:
    """Row counts of the table's latest `row_history_days` partitions before `day`, oldest first (read from
    the Parquet footers, no data is loaded)."""
    cfg = config or SuiteConfig()
    earlier = [d for d in lake.days(table) if d < day][-cfg.row_history_days :] if cfg.row_history_days else []
    return [sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in lake.files(table, d)) for d in earlier]


def row_count_band(history: Sequence[int], config: SuiteConfig | None = None) -> tuple[int, int] | None:
    """Accepted [low, high] row count today given the previous days' counts (oldest first); None without
    a history to judge by (fewer than `row_history_min_days` days with rows)."""
    cfg = config or SuiteConfig()
    if any(n < 0 for n in history):
        raise ValueError(f"row count history {list(history)}: a row count is >= 0")
    logs = [math.log(n) for n in history if n > 0]
    if len(logs) < cfg.row_history_min_days:
        return None
    centre = statistics.median(logs)
    spread = MAD_TO_SIGMA * statistics.median(abs(x - centre) for x in logs)
    width = max(math.log(cfg.row_band_ratio), cfg.row_band_sigmas * spread)
    return math.ceil(math.exp(centre - width) - 1e-9), math.floor(math.exp(centre + width) + 1e-9)
