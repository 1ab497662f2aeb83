"""How much a reward model pays for reply length, and its scores with that part taken out.

A reward model trained on engagement often learns a length preference (shorter or longer replies get
higher scores whatever they say). A policy trained to pick its best-scored replies then learns the
length instead of the content, and the artifact-drift gate blocks it. The length trend is measured where
it acts: within each prompt's own candidates, since rejection sampling, preference pairs and GRPO groups
only ever compare replies to the same prompt. It is the pooled within-prompt least-squares slope of the
score on log(1 + characters) (each prompt's means removed first, so prompts that draw long replies do
not count as length). Subtracting `slope * log(1 + chars)` leaves the ranking inside a prompt free of
the linear length trend and keeps everything else the reward model prefers, in the spirit of
length-controlled win rates (AlpacaEval LC) and length-disentangled rewards (ODIN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# Below this many rows in prompts with at least two candidates, the slope is too noisy to act on.
MIN_ROWS = 20


@dataclass(frozen=True)
class LengthTrend:
    """The within-prompt length trend of a score: `slope` per unit of log(1 + chars), the share of the
    within-prompt score variance it explains (`r2`), and the rows and prompts it was fitted on. `slope` is 0
    when fewer than `MIN_ROWS` rows could be used."""

    slope: float
    r2: float
    rows: int
    prompts: int

    def as_dict(self) -> dict[str, float | int]:
        return {"slope": self.slope, "r2": self.r2, "rows": self.rows, "prompts": self.prompts}


def log_chars(text: pl.Expr) -> pl.Expr:
    return (pl.col(text).fill_null("").str.len_chars().cast(pl.Float64) + 1.0).log()


def fit_length_trend(
    frame: pl.DataFrame, score: str = "rm_pointwise", text: str = "text", group: str = "prompt_id"
) -> LengthTrend:
    """The pooled within-`group` slope of `score` on log(1 + characters of `text`); rows with a null score
    and groups with a single scored row are left out."""
    if frame.is_empty():
        return LengthTrend(0.0, 0.0, 0, 0)
    work = (
        frame.select(pl.col(group), pl.col(score).cast(pl.Float64).alias("_y"), log_chars(text).alias("_x"))
        .filter(pl.col("_y").is_not_null() & pl.col("_y").is_finite())
        .with_columns(pl.len().over(group).alias("_n"))
        .filter(pl.col("_n") >= 2)
        .with_columns(
            (pl.col("_x") - pl.col("_x").mean().over(group)).alias("_dx"),
            (pl.col("_y") - pl.col("_y").mean().over(group)).alias("_dy"),
        )
    )
    rows, prompts = work.height, work[group].n_unique() if work.height else 0
    sxx = float((work["_dx"] ** 2).sum()) if rows else 0.0
    if rows < MIN_ROWS or sxx <= 0.0:
        return LengthTrend(0.0, 0.0, rows, prompts)
    slope = float((work["_dx"] * work["_dy"]).sum()) / sxx
    syy = float((work["_dy"] ** 2).sum())
    r2 = slope * slope * sxx / syy if syy > 0 else 0.0
    return LengthTrend(slope, float(np.clip(r2, 0.0, 1.0)), rows, prompts)


def remove_length_trend(
    frame: pl.DataFrame, slope: float, score: str = "rm_pointwise", text: str = "text", out: str | None = None
) -> pl.DataFrame:
    """`score` minus `slope * log(1 + chars)`, written to `out` (default: over `score`); nulls stay null."""
    if frame.is_empty() or slope == 0.0:
        return frame if out is None else frame.with_columns(pl.col(score).cast(pl.Float64).alias(out))
    return frame.with_columns((pl.col(score).cast(pl.Float64) - slope * log_chars(text)).alias(out or score))


def length_adjusted(scores: np.ndarray, replies: list[str], slope: float) -> np.ndarray:
    """The same correction on an array of scores and their replies (for online rewards)."""
    if slope == 0.0:
        return scores
    lengths = np.log1p(np.fromiter((len(r or "") for r in replies), dtype=np.float64, count=len(replies)))
    return scores - slope * lengths
