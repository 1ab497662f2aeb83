"""What the models that judge learn from, in time order, and evaluation slices with enough users to read.

The reward models and the user simulator judge a generation, so they learn from as much traffic as there
is, not from its window alone: every curated day up to the window's last day (at most `max_earlier_days`
days before the window, 0 = all of them). `time_ordered_split` picks the rows:

- training rows: the training users' rows of the earlier days and of the window;
- validation rows: the window's held-out users' rows (the users offline evaluation judges the generation on).

A held-out user never trains a judge. Split rule and salt are `pipeline.sampling`'s, applied to all the
days at once (so a user is on one side for every day), and on top of it any user the window holds out is
left out of training whatever their other days say (a user whose traffic is internal on one day and
external on another can be held out by one frame and not by another).

`pooled_slices` makes evaluation slices big enough: when the window holds out fewer than `min_slice_users`
users in a slice, held-out users of earlier days join it, latest day first, as long as nothing trained on
them (neither the judges' training rows nor the users a caller names, e.g. the pools' `train` splits the
policies learnt from). A pooled user brings the rows of the latest earlier day they appear on; every pooled
row says it was pooled, and a users table says which day each user came from.

Rows a selection leaves out are counted by reason code, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

import polars as pl

from pipeline.sampling import SamplingConfig
from pipeline.user_split import assign_split

STAGE = "judge_data"
# reason codes of rows left out of a judge's training data
AFTER_WINDOW = "after_window"
BEFORE_HISTORY = "before_history"
HELD_OUT_USER = "held_out_user"
WINDOW_HELD_OUT_USER = "window_held_out_user"
MISSING_DAY = "missing_day"
# reason codes of held-out users of earlier days kept out of an evaluation slice
TRAINED_USER = "trained_user"
SLICE_FULL = "slice_full"

HELD_OUT_SPLITS = ("eval_internal", "eval_user")

POOLED_USERS = pl.Schema(
    {
        "split": pl.Utf8,
        "user_hash": pl.Utf8,
        # false: a held-out user of the window; true: a held-out user of an earlier day, pooled in
        "pooled": pl.Boolean,
        # the latest day the user's rows come from (the day that brought a pooled user in)
        "day": pl.Date,
        "prompts": pl.Int64,
    }
)


@dataclass
class JudgeDataConfig:
    max_earlier_days: int = field(
        default=0,
        metadata={
            "help": "Most curated days before a generation's window that its reward models and user simulator "
            "learn from (and that evaluation slices may pool held-out users from); 0 = every earlier day."
        },
    )
    min_slice_users: int = field(
        default=20,
        metadata={
            "help": "Fewest users an evaluation slice should hold (the release's win-rate gates ask for as many): "
            "when the window holds out fewer, held-out users of earlier days that nothing trained on join the "
            "slice, latest day first. 0 = never pool."
        },
    )

    def __post_init__(self) -> None:
        if self.max_earlier_days < 0:
            raise ValueError(f"max_earlier_days={self.max_earlier_days} must be >= 0 (0 = every earlier day)")
        if self.min_slice_users < 0:
            raise ValueError(f"min_slice_users={self.min_slice_users} must be >= 0 (0 = never pool)")


def history_days(available: Iterable[date], window: Sequence[date], max_earlier_days: int = 0) -> list[date]:
    """The curated days a judge of `window` may read: every available day up to the window's last, of which at
    most `max_earlier_days` (0 = all) lie before the window's first day. Sorted, oldest first."""
    if not window:
        raise ValueError("the generation's window has no days: name at least one")
    first, last = min(window), max(window)
    days = sorted({d for d in available if d <= last})
    earlier = [d for d in days if d < first]
    if max_earlier_days:
        earlier = earlier[-max_earlier_days:]
    return earlier + [d for d in days if d >= first]


@dataclass(frozen=True)
class TimeOrderedSplit:
    """A judge's training and validation rows, the window's held-out users, and the rows left out by reason."""

    train: pl.DataFrame
    validation: pl.DataFrame
    held_out_users: frozenset[str]
    dropped: dict[str, int]

    @property
    def counters(self) -> dict[str, int]:
        return {
            "train_rows": self.train.height,
            "train_users": self.train["user_hash"].n_unique() if self.train.height else 0,
            "train_days": self.train["day"].n_unique() if self.train.height else 0,
            "validation_rows": self.validation.height,
            "validation_users": len(self.held_out_users),
            **{f"dropped_{k}": v for k, v in self.dropped.items()},
        }


def _check_columns(frame: pl.DataFrame, what: str) -> None:
    missing = [c for c in ("user_hash", "source", "day") if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}: pass curated prompts (unique_prompts or prompts)")


def _window_held_out(frame: pl.DataFrame, window: Sequence[date], sampling: SamplingConfig) -> pl.DataFrame:
    rows = frame.filter(pl.col("day").is_in(list(window)))
    if rows.is_empty():
        return rows.with_columns(pl.lit(None, pl.Utf8).alias("split"))
    # split over the window alone: the same users offline evaluation holds out (`user_split.held_out_prompts`)
    return rows.with_columns(assign_split(rows["user_hash"], rows["source"], sampling).alias("split")).filter(
        pl.col("split") != "train"
    )


def time_ordered_split(
    rows: pl.DataFrame,
    window: Sequence[date],
    sampling: SamplingConfig | None = None,
    config: JudgeDataConfig | None = None,
) -> TimeOrderedSplit:
    """Training rows of a judge (training users' rows of every allowed day up to the window's end) and its
    validation rows (the window's held-out users' rows) from `rows`, curated prompts of any days. See the
    module docstring; `dropped` counts the rows left out of training by reason."""
    sampling, config = sampling or SamplingConfig(), config or JudgeDataConfig()
    _check_columns(rows, "the judges' rows")
    allowed = history_days(rows["day"].drop_nulls().unique().to_list(), window, config.max_earlier_days)
    last, first_allowed = max(window), (allowed[0] if allowed else max(window))
    validation = _window_held_out(rows, window, sampling)
    held = frozenset(validation["user_hash"].drop_nulls().to_list())

    work = rows.filter(pl.col("day").is_not_null())
    reasons = (
        pl.when(pl.col("day") > last)
        .then(pl.lit(AFTER_WINDOW))
        .when(pl.col("day") < first_allowed)
        .then(pl.lit(BEFORE_HISTORY))
    )
    work = work.with_columns(reasons.alias("_reason"))
    inside = work.filter(pl.col("_reason").is_null())
    split = assign_split(inside["user_hash"], inside["source"], sampling) if inside.height else pl.Series([], pl.Utf8)
    inside = inside.with_columns(
        pl.when(split != "train")
        .then(pl.lit(HELD_OUT_USER))
        .when(pl.col("user_hash").is_in(list(held)))
        .then(pl.lit(WINDOW_HELD_OUT_USER))
        .alias("_reason")
    )
    tagged = pl.concat([work.filter(pl.col("_reason").is_not_null()), inside], how="vertical_relaxed")
    counts = dict(tagged.filter(pl.col("_reason").is_not_null()).group_by("_reason").len().iter_rows())
    dropped = {r: int(counts.get(r, 0)) for r in (AFTER_WINDOW, BEFORE_HISTORY, HELD_OUT_USER, WINDOW_HELD_OUT_USER)}
    dropped[MISSING_DAY] = rows.height - work.height
    train = inside.filter(pl.col("_reason").is_null()).drop("_reason")
    return TimeOrderedSplit(train, validation, held, dropped)


@dataclass(frozen=True)
class PooledSlices:
    """Evaluation rows (the window's held-out rows plus pooled ones, flagged `pooled`), one row per user
    (`POOLED_USERS`), and the earlier held-out users left out by reason."""

    rows: pl.DataFrame
    users: pl.DataFrame
    dropped: dict[str, int]

    def users_per_slice(self) -> dict[str, dict[str, int]]:
        out = {s: {"window": 0, "pooled": 0} for s in HELD_OUT_SPLITS}
        for s, pooled, n in self.users.group_by("split", "pooled").len().iter_rows():
            out.setdefault(s, {"window": 0, "pooled": 0})["pooled" if pooled else "window"] = int(n)
        return out


def _user_table(rows: pl.DataFrame, pooled: bool) -> pl.DataFrame:
    if rows.is_empty():
        return pl.DataFrame(schema=POOLED_USERS)
    return (
        rows.group_by("split", "user_hash")
        .agg(pl.col("day").max(), pl.len().cast(pl.Int64).alias("prompts"))
        .with_columns(pl.lit(pooled).alias("pooled"))
        .select(list(POOLED_USERS))
        .cast(dict(POOLED_USERS))
    )


def pooled_slices(
    window_held_out: pl.DataFrame,
    earlier: pl.DataFrame,
    sampling: SamplingConfig | None = None,
    config: JudgeDataConfig | None = None,
    trained_users: Iterable[str] = (),
) -> PooledSlices:
    """The window's held-out rows (`window_held_out`, with their `split`), plus, in each slice with fewer than
    `min_slice_users` users, held-out users of the days in `earlier` (curated prompts of days before the
    window) that no training saw: neither `trained_users` nor anyone `earlier` puts in training. Users join
    latest day first (by user hash within a day), until the slice has enough; each brings its held-out rows of
    that day."""
    sampling, config = sampling or SamplingConfig(), config or JudgeDataConfig()
    if "split" not in window_held_out.columns:
        raise ValueError("window_held_out lacks `split`: pass `user_split.held_out_prompts` of the window")
    window_rows = window_held_out.with_columns(pl.lit(False).alias("pooled"))
    users = [_user_table(window_rows, pooled=False)]
    dropped = {TRAINED_USER: 0, SLICE_FULL: 0}
    have = {
        s: set(window_rows.filter(pl.col("split") == s)["user_hash"].drop_nulls().to_list()) for s in HELD_OUT_SPLITS
    }
    short = {s for s in HELD_OUT_SPLITS if len(have[s]) < config.min_slice_users}
    if not short or earlier.is_empty():
        return PooledSlices(window_rows, pl.concat(users), dropped)
    _check_columns(earlier, "the earlier days' rows")
    earlier = earlier.filter(pl.col("user_hash").is_not_null() & pl.col("day").is_not_null())
    split = assign_split(earlier["user_hash"], earlier["source"], sampling)
    tagged = earlier.with_columns(split.alias("split"))
    trained = set(trained_users) | set(tagged.filter(pl.col("split") == "train")["user_hash"].to_list())
    taken = set().union(*have.values())
    candidates = tagged.filter((pl.col("split") != "train") & ~pl.col("user_hash").is_in(list(taken)))
    excluded = candidates.filter(pl.col("user_hash").is_in(list(trained)))
    dropped[TRAINED_USER] = excluded["user_hash"].n_unique()
    candidates = candidates.filter(~pl.col("user_hash").is_in(list(trained)))
    # a user joins through the latest day they appear on; within a day by hash order (salted, so arbitrary)
    order = (
        candidates.group_by("split", "user_hash")
        .agg(pl.col("day").max())
        .sort(["day", "user_hash"], descending=[True, False])
    )
    chosen: list[str] = []
    for s in HELD_OUT_SPLITS:
        offered = order.filter(pl.col("split") == s)["user_hash"].to_list()
        need = max(config.min_slice_users - len(have[s]), 0) if s in short else 0
        chosen += offered[:need]
        dropped[SLICE_FULL] += max(len(offered) - need, 0)
    # a pooled user brings the rows of the day that brought them in: one day's traffic per user, like the window's
    joined = order.filter(pl.col("user_hash").is_in(chosen)).select("user_hash", "day")
    pooled = candidates.join(joined, on=["user_hash", "day"], how="semi").with_columns(pl.lit(True).alias("pooled"))
    users.append(_user_table(pooled, pooled=True))
    rows = pl.concat([window_rows, pooled], how="diagonal_relaxed")
    return PooledSlices(rows, pl.concat(users).sort("split", "pooled", "day", "user_hash"), dropped)
