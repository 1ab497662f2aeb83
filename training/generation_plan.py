"""The generation in progress: its name, its parent policy and the window of curated days it learns from.

A generation is one turn of the flywheel. Its window is the last `window_days` curated days on or before
a chosen end (the newest day by default); the flywheel gives consecutive generations consecutive windows
(`windows`), so generation k learns from days that come after those of generation k-1. A new generation
starts from the newest recorded one that was released (`last_released`); gen-0 is the base policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

import polars as pl

from pipeline.lake import Lake
from pipeline.sampling import SamplingConfig, assign_split

BASE = "gen-0"
# days as dates or ISO strings: both sort in time order
Day = TypeVar("Day", date, str)


@dataclass
class GenerationPlan:
    generation: str
    number: int
    parent: str
    days: list[str]
    created_at: str

    @property
    def day_dates(self) -> list[date]:
        return [date.fromisoformat(d) for d in self.days]


def window(days: Sequence[Day], size: int, end: Day | None = None) -> list[Day]:
    """The last `size` of the sorted `days` on or before `end` (the last day when None); [] when none is."""
    if size < 1:
        raise ValueError(f"window_days={size}: a window holds at least one day")
    kept = [d for d in days if end is None or d <= end]
    return list(kept[-size:])


def windows(days: Sequence[Day], generations: int, window_days: int) -> list[list[Day]]:
    """Consecutive windows of `window_days` ending at the last of the sorted `days`, oldest first: one per
    generation, each ending where the next one's begins."""
    if generations < 1 or window_days < 1:
        raise ValueError("--generations and --window-days must be >= 1")
    need = generations * window_days
    if need > len(days):
        raise ValueError(
            f"{generations} generations of {window_days} days need {need} replayed days but the source has "
            f"{len(days)}; lower --generations or --window-days (or raise FLYWHEEL_REPLAY_DAYS)"
        )
    ends = [days[len(days) - 1 - k * window_days] for k in reversed(range(generations))]
    return [window(days, window_days, end) for end in ends]


def last_released(recorded: pl.DataFrame) -> str:
    """The generation a new one starts from: the newest recorded one that passed its release gates and that the
    A/B test did not reject; gen-0 when there is none. A blocked generation is recorded but never built upon."""
    usable = recorded
    if usable.height and "released" in usable.columns:
        usable = usable.filter(pl.col("released").fill_null(True))
    if usable.height and "ab_verdict" in usable.columns:
        usable = usable.filter(~pl.col("ab_verdict").fill_null("").str.starts_with("no-ship"))
    return str(usable.sort("number")["generation"][-1]) if usable.height else BASE


def plan_generation(
    curated_days: Sequence[date], recorded: pl.DataFrame, window_days: int, window_end: str | None, now: str
) -> GenerationPlan:
    """The next generation after the `recorded` ones (the `generations` table), over the window of the curated
    days ending at `window_end` (the newest curated day when None)."""
    if not curated_days:
        raise ValueError(
            "no curated prompts in the lake yet: materialize the consolidation job for some days first "
            "(make demo, or the `consolidation` job in the UI)"
        )
    days = window(curated_days, window_days, date.fromisoformat(window_end) if window_end else None)
    if not days:
        raise ValueError(
            f"window_end={window_end}: no curated prompts on or before it; consolidate those days first "
            "or set `window_end` (env FLYWHEEL_WINDOW_END) to a later day"
        )
    number = (int(recorded["number"].max()) + 1) if recorded.height else 1
    return GenerationPlan(f"gen-{number}", number, last_released(recorded), [d.isoformat() for d in days], now)


def read_window(lake: Lake, table: str, plan: GenerationPlan) -> pl.DataFrame:
    """The table's partitions of the plan's days, one frame (empty when it has none)."""
    parts = [lake.read(table, d) for d in plan.day_dates if lake.exists(table, d)]
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def training_prompts(
    lake: Lake, plan: GenerationPlan, cap: int, seed: int = 0, sampling: SamplingConfig | None = None
) -> pl.DataFrame:
    """The window's unique prompts of training users only (held-out users never teach a reward model),
    with their topic, capped to `cap` rows by a seeded sample spread over the days."""
    prompts = read_window(lake, "unique_prompts", plan)
    if prompts.is_empty():
        raise ValueError(f"no unique_prompts for the days {plan.days}: materialize the consolidation job for them")
    topics = read_window(lake, "topic_assignments", plan)
    if topics.height:
        prompts = prompts.join(
            topics.select(pl.col("row_id").alias("prompt_id"), "cluster_id"), on="prompt_id", how="left"
        )
    split = assign_split(prompts["user_hash"], prompts["source"], sampling or SamplingConfig())
    prompts = prompts.filter(split == "train")
    if prompts.height > cap:
        prompts = prompts.sample(cap, seed=seed).sort("day", "prompt_id")
    return prompts
