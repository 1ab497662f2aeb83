"""The generation in progress: its name, its parent policy and the window of curated days it learns from.

A generation is one turn of the flywheel. Its window is the last `window_days` curated days on or before
a chosen end (the newest day by default); the flywheel gives consecutive generations consecutive windows
(`windows`), so generation k learns from days that come after those of generation k-1. A new generation
starts from the newest recorded one that is built upon (`last_built_upon`): released, not rejected by its A/B
test, and decided better than its parent; gen-0 is the base policy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

import polars as pl

from pipeline.judge_data import JudgeDataConfig, TimeOrderedSplit, history_days, time_ordered_split
from pipeline.lake import Lake
from pipeline.sampling import SamplingConfig

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


def built_upon(recorded: pl.DataFrame) -> pl.Series:
    """Per recorded generation, whether later ones may build on it: it passed its release gates, the A/B test did
    not reject it, and the evidence decided it improves on its parent (`improvement.improved` of its metrics; a
    generation recorded before that was recorded counts as improved). A released generation that is merely not
    worse than its parent is served, but the flywheel goes on from the better model."""
    n = recorded.height
    released = recorded["released"].fill_null(True) if "released" in recorded.columns else pl.Series([True] * n)
    rejected = (
        recorded["ab_verdict"].fill_null("").str.starts_with("no-ship")
        if "ab_verdict" in recorded.columns
        else pl.Series([False] * n)
    )
    improved = [
        bool(((json.loads(m or "{}") or {}).get("improvement") or {}).get("improved", True))
        for m in (recorded["metrics"] if "metrics" in recorded.columns else [None] * n)
    ]
    return (released & ~rejected & pl.Series(improved, dtype=pl.Boolean)).alias("built_upon")


def last_built_upon(recorded: pl.DataFrame) -> str:
    """The generation a new one starts from: the newest recorded one that is `built_upon`; gen-0 when there is
    none. A blocked generation, or one no better than its parent, is recorded but never built upon."""
    if recorded.is_empty():
        return BASE
    usable = recorded.filter(built_upon(recorded))
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
    return GenerationPlan(f"gen-{number}", number, last_built_upon(recorded), [d.isoformat() for d in days], now)


def read_window(lake: Lake, table: str, plan: GenerationPlan) -> pl.DataFrame:
    """The table's partitions of the plan's days, one frame (empty when it has none)."""
    parts = [lake.read(table, d) for d in plan.day_dates if lake.exists(table, d)]
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def read_history(lake: Lake, table: str, plan: GenerationPlan, max_earlier_days: int = 0) -> pl.DataFrame:
    """`table` over every day up to the window's last that the judges may read (`judge_data.history_days`)."""
    days = history_days(lake.days(table), plan.day_dates, max_earlier_days) if lake.exists(table) else []
    parts = [lake.read(table, d) for d in days]
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def judge_rows(
    lake: Lake, plan: GenerationPlan, sampling: SamplingConfig | None = None, judge: JudgeDataConfig | None = None
) -> TimeOrderedSplit:
    """The reward models' unique prompts with their topic, in time order (`pipeline.judge_data`): training users'
    rows of every curated day up to the window (bounded by `judge`; the window alone without it) and the
    window's held-out users' rows to validate on."""
    history = read_history(lake, "unique_prompts", plan, judge.max_earlier_days) if judge else pl.DataFrame()
    prompts = history if history.height else read_window(lake, "unique_prompts", plan)
    if prompts.is_empty():
        raise ValueError(f"no unique_prompts for the days {plan.days}: materialize the consolidation job for them")
    topics = read_history(lake, "topic_assignments", plan, judge.max_earlier_days) if judge else pl.DataFrame()
    topics = topics if topics.height else read_window(lake, "topic_assignments", plan)
    if topics.height:
        prompts = prompts.join(
            topics.select(pl.col("row_id").alias("prompt_id"), "cluster_id"), on="prompt_id", how="left"
        )
    return time_ordered_split(prompts, plan.day_dates, sampling or SamplingConfig(), judge or JudgeDataConfig())


def capped_sample(prompts: pl.DataFrame, cap: int, seed: int = 0) -> pl.DataFrame:
    return prompts.sample(cap, seed=seed).sort("day", "prompt_id") if prompts.height > cap else prompts


def training_prompts(
    lake: Lake,
    plan: GenerationPlan,
    cap: int,
    seed: int = 0,
    sampling: SamplingConfig | None = None,
    judge: JudgeDataConfig | None = None,
) -> pl.DataFrame:
    """Unique prompts of training users only (held-out users never teach a reward model), with their topic,
    capped to `cap` rows by a seeded sample spread over the days: the window's, or with `judge` every curated
    day up to the window's end (`judge_rows`)."""
    return capped_sample(judge_rows(lake, plan, sampling, judge).train, cap, seed)
