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


def length_adjusted(scores: np.ndarray, replies: list[str], slope: float | np.ndarray) -> np.ndarray:
    """The same correction on an array of scores and their replies (for online rewards); `slope` is one for all
    or one per reply (each prompt's kind has its own)."""
    if np.all(np.asarray(slope) == 0.0):
        return scores
    lengths = np.log1p(np.fromiter((len(r or "") for r in replies), dtype=np.float64, count=len(replies)))
    return scores - np.asarray(slope, dtype=np.float64) * lengths


# ---------------------------------------------------------------------------------------------------------------
# Length balance of a training set
#
# Taking the linear trend out of the reward is not enough: the reply a best-of-n keeps and the pair DPO sees are
# the extremes of a few candidates. So each training source is also balanced (the builders exempt the
# character-card ones, whose rules set the length): a row's length is compared with a reference (what the
# policy being trained already writes for that prompt; for a pair, its rejected reply), and the rows that pull
# the source away from it are left out (reason `length_balance`) until the source's mean length is within a
# tolerance of the references' mean. Those rows are the most extreme on the side the source leans to, so what is kept still
# teaches everything but the length. Lengths are compared in mean characters, the statistic the artifact gate
# watches: balanced in log length instead (commit 9e7fc4c), the SFT sets still came out shorter in mean
# characters (the policy's own replies have a long tail of long ones, which a best-of-n rarely keeps).


def relative_shifts(lengths: list[float], references: list[float]) -> list[float]:
    """Per row, (length - reference) / the references' mean: their mean is the relative difference of the
    mean length from the mean reference (mean(lengths) / mean(references) - 1), the quantity a balance holds
    near 0. Empty when there are no rows or the references' mean is not positive."""
    if len(lengths) != len(references):
        raise ValueError(f"{len(lengths)} lengths but {len(references)} references")
    scale = float(np.mean(references)) if references else 0.0
    if scale <= 0:
        return []
    return [(a - b) / scale for a, b in zip(lengths, references, strict=True)]


def relative_difference(lengths: list[float], references: list[float]) -> float | None:
    """mean(lengths) / mean(references) - 1, or None without rows."""
    total = float(np.sum(references)) if references else 0.0
    return float(np.sum(lengths)) / total - 1.0 if total > 0 else None


# A source never loses more than this share of its rows to the balance: where nearly every row is shorter (a card
# whose rules ask for brevity), the rest of what the rows teach matters more than the length, and the shift left
# is recorded in the manifest.
MAX_LEFT_OUT = 0.5


def balance_shifts(shifts: list[float], tolerance: float, max_left_out: float = MAX_LEFT_OUT) -> set[int]:
    """Indices to leave out so that the mean of the other `shifts` is within +-`tolerance` of 0: the most extreme
    shift on the side the mean leans to goes first, one at a time, and at most `max_left_out` of the rows go (at
    least one is kept). An empty list or a mean already within the tolerance leaves nothing out. Deterministic
    (ties go by index)."""
    if tolerance < 0:
        raise ValueError(f"tolerance={tolerance} must be >= 0")
    if not 0.0 <= max_left_out < 1.0:
        raise ValueError(f"max_left_out={max_left_out} must be in [0, 1)")
    n, total = len(shifts), float(sum(shifts))
    if n == 0 or abs(total / n) <= tolerance:
        return set()
    budget = min(int(max_left_out * n), n - 1)
    leaning_up = total > 0
    order = sorted(range(n), key=lambda i: (-shifts[i] if leaning_up else shifts[i], i))
    dropped: set[int] = set()
    for i in order:
        if len(dropped) >= budget or abs(total / (n - len(dropped))) <= tolerance:
            break
        # stop before a drop that would push the mean past 0 further than it stands now
        remaining = n - len(dropped) - 1
        if abs((total - shifts[i]) / remaining) > abs(total / (n - len(dropped))):
            break
        total -= shifts[i]
        dropped.add(i)
    return dropped


def balanced_order(shifts: list[float], tolerance: float) -> list[int]:
    """An order of the rows (given best-first) in which every prefix keeps its mean shift near 0: the next row is
    the best remaining one whenever it leaves the prefix's mean within +-`tolerance`, else whichever of the best
    remaining longer and shorter rows brings that mean closer to 0. A mixture that keeps the first n rows of a
    source then keeps a length-balanced n, as close to the best n as that allows. Linear in the rows."""
    longer = [i for i, v in enumerate(shifts) if v > 0]
    shorter = [i for i, v in enumerate(shifts) if v <= 0]
    order: list[int] = []
    total, a, b = 0.0, 0, 0
    while a < len(longer) or b < len(shorter):
        live = [
            i
            for i in (longer[a] if a < len(longer) else None, shorter[b] if b < len(shorter) else None)
            if i is not None
        ]
        best = min(live)
        if abs((total + shifts[best]) / (len(order) + 1)) > tolerance:
            best = min(live, key=lambda i: (abs((total + shifts[i]) / (len(order) + 1)), i))
        order.append(best)
        total += shifts[best]
        if a < len(longer) and best == longer[a]:
            a += 1
        else:
            b += 1
    return order


def balance_lengths(
    lengths: list[float], references: list[float], tolerance: float | None, exempt: bool = False
) -> tuple[set[int], list[float], dict]:
    """One source's balance: (indices to leave out, each row's relative shift, a report of the source's relative
    difference `before` and `after`, `left_out`, and `exempt` when it was left as it is). `tolerance` None or
    `exempt` leaves every row in."""
    shifts = relative_shifts(lengths, references)
    out = balance_shifts(shifts, tolerance) if shifts and tolerance is not None and not exempt else set()
    kept = [i for i in range(len(lengths)) if i not in out]
    report = {
        "before": relative_difference(lengths, references),
        "after": relative_difference([lengths[i] for i in kept], [references[i] for i in kept]),
        "left_out": len(out),
        **({"exempt": True} if exempt else {}),
    }
    return out, shifts, report
