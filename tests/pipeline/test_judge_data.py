"""Time-ordered judge data and pooled evaluation slices, on planted frames."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from pipeline.judge_data import (
    AFTER_WINDOW,
    BEFORE_HISTORY,
    HELD_OUT_USER,
    POOLED_USERS,
    TRAINED_USER,
    WINDOW_HELD_OUT_USER,
    JudgeDataConfig,
    history_days,
    pooled_slices,
    time_ordered_split,
)
from pipeline.sampling import SamplingConfig
from pipeline.user_split import assign_split, held_out_prompts

DAYS = [date(2026, 1, 1) + timedelta(days=k) for k in range(7)]
WINDOW = DAYS[3:5]  # days 5 and 6 come after the window


def _rows(n_users: int = 200, per_day: int = 60, internal_every: int = 10) -> pl.DataFrame:
    """Each day, a rotating set of users sends one prompt each; every tenth user is an internal tester."""
    rows = []
    for k, day in enumerate(DAYS):
        for i in range(per_day):
            u = (k * 37 + i) % n_users
            rows.append(
                {
                    "prompt_id": f"{day}-p{i}",
                    "user_hash": f"user-{u:04d}",
                    "source": "internal" if u % internal_every == 0 else "external",
                    "day": day,
                }
            )
    return pl.DataFrame(rows)


def _split(frame: pl.DataFrame, config: SamplingConfig) -> pl.Series:
    return assign_split(frame["user_hash"], frame["source"], config)


def test_history_days_are_bounded_and_never_after_the_window():
    assert history_days(DAYS, WINDOW) == DAYS[:5]
    assert history_days(DAYS, WINDOW, max_earlier_days=2) == DAYS[1:5]
    assert history_days(DAYS[3:], WINDOW) == WINDOW
    with pytest.raises(ValueError, match="no days"):
        history_days(DAYS, [])
    with pytest.raises(ValueError, match="max_earlier_days"):
        JudgeDataConfig(max_earlier_days=-1)


def test_judges_train_on_every_earlier_day_and_never_on_the_windows_held_out_users():
    rows, sampling = _rows(), SamplingConfig(eval_fraction=0.2)
    split = time_ordered_split(rows, WINDOW, sampling)
    window = rows.filter(pl.col("day").is_in(WINDOW))
    held = set(held_out_prompts(window, pl.DataFrame(), sampling)["user_hash"])
    assert held and split.held_out_users == held
    # the planted guarantee: no held-out user of the window in the training frame, on any day
    assert not set(split.train["user_hash"]) & held
    # the training frame reaches back to the first day and stops at the window's end
    assert sorted(split.train["day"].unique()) == DAYS[:5]
    assert (_split(split.train, sampling) == "train").all()
    # validation is the window's held-out rows, nothing else
    assert set(split.validation["user_hash"]) == held and set(split.validation["day"]) <= set(WINDOW)
    assert split.validation.height == window.filter(pl.col("user_hash").is_in(list(held))).height
    # every row is accounted for
    assert split.dropped[AFTER_WINDOW] == rows.filter(pl.col("day") > WINDOW[-1]).height
    assert split.train.height + sum(split.dropped.values()) == rows.height
    counters = split.counters
    assert counters["train_days"] == 5 and counters["validation_users"] == len(held)


def test_a_user_the_window_holds_out_stays_out_even_where_other_days_would_train_on_them():
    # internal users are never held out, external ones half the time: a user who is internal on an earlier day
    # counts as internal over all the days (trained on), but the window alone, all external, holds them out
    sampling = SamplingConfig(eval_fraction=0.5, internal_eval_fraction=0.0)
    rows = _rows(internal_every=10_000)
    window = rows.filter(pl.col("day").is_in(WINDOW))
    held_in_window = window.filter(_split(window, sampling) != "train")["user_hash"].unique().to_list()
    earlier_users = set(rows.filter(pl.col("day") < WINDOW[0])["user_hash"])
    turncoat = next(u for u in sorted(held_in_window) if u in earlier_users)
    rows = rows.with_columns(
        pl.when((pl.col("user_hash") == turncoat) & (pl.col("day") < WINDOW[0]))
        .then(pl.lit("internal"))
        .otherwise(pl.col("source"))
        .alias("source")
    )
    assert (_split(rows, sampling).filter(rows["user_hash"] == turncoat) == "train").all()
    split = time_ordered_split(rows, WINDOW, sampling)
    assert turncoat in split.held_out_users and turncoat not in set(split.train["user_hash"])
    assert (
        split.dropped[WINDOW_HELD_OUT_USER]
        == rows.filter((pl.col("user_hash") == turncoat) & (pl.col("day") <= WINDOW[-1])).height
    )
    assert split.dropped[HELD_OUT_USER] > 0


def test_earlier_days_are_bounded_by_the_setting():
    split = time_ordered_split(_rows(), WINDOW, config=JudgeDataConfig(max_earlier_days=1))
    assert sorted(split.train["day"].unique()) == DAYS[2:5]
    assert split.dropped[BEFORE_HISTORY] == 2 * 60


def test_small_slices_pool_held_out_users_of_earlier_days_that_nothing_trained_on():
    rows, sampling = _rows(), SamplingConfig(eval_fraction=0.2)
    window = rows.filter(pl.col("day").is_in(WINDOW))
    earlier = rows.filter(pl.col("day") < WINDOW[0])
    held = held_out_prompts(window, pl.DataFrame(), sampling)
    split = time_ordered_split(rows, WINDOW, sampling)
    # a user some policy learnt from is never pooled, whatever the split says now
    candidates = earlier.filter(_split(earlier, sampling) != "train")
    candidates = candidates.filter(~pl.col("user_hash").is_in(held["user_hash"].implode()))
    policy_trained = sorted(candidates["user_hash"].unique())[:2]
    config = JudgeDataConfig(min_slice_users=25)
    out = pooled_slices(held, earlier, sampling, config, trained_users=[*split.train["user_hash"], *policy_trained])

    window_users = dict(held.group_by("split").agg(pl.col("user_hash").n_unique()).iter_rows())
    per_slice = out.users_per_slice()
    assert {s: v["window"] for s, v in per_slice.items()} == window_users
    assert sum(v["pooled"] for v in per_slice.values()) > 0
    pooled = out.users.filter(pl.col("pooled"))
    # the planted guarantee: no pooled user was trained on, by the judges or by the policies
    assert not set(pooled["user_hash"]) & (set(split.train["user_hash"]) | set(policy_trained))
    assert not set(pooled["user_hash"]) & set(held["user_hash"])
    assert out.dropped[TRAINED_USER] >= len(policy_trained)
    # the pool says where each user came from: every pooled row is flagged, from an earlier day
    assert out.users.schema == POOLED_USERS
    assert (out.rows.filter(pl.col("pooled"))["day"] < WINDOW[0]).all()
    assert out.rows.filter(~pl.col("pooled")).height == held.height
    # each pooled user comes from the latest earlier day they appear on, with that day's rows only
    latest = earlier.group_by("user_hash").agg(pl.col("day").max().alias("last"))
    joined = pooled.join(latest, on="user_hash")
    assert (joined["day"] == joined["last"]).all()
    came = out.rows.filter(pl.col("pooled")).join(pooled.select("user_hash", "day"), on="user_hash")
    assert (came["day"] == came["day_right"]).all()
    assert came.height == earlier.join(pooled.select("user_hash", "day"), on=["user_hash", "day"]).height
    # a slice stops at its minimum, or takes every eligible user there is, latest day first
    trained = set(split.train["user_hash"]) | set(policy_trained)
    for name, counts in per_slice.items():
        got = pooled.filter(pl.col("split") == name)
        rest = candidates.filter(
            (_split(candidates, sampling) == name)
            & ~pl.col("user_hash").is_in(got["user_hash"].implode())
            & ~pl.col("user_hash").is_in(list(trained))
        )
        if counts["window"] + counts["pooled"] < 25:
            assert rest.is_empty(), name
        else:
            assert counts["window"] + counts["pooled"] == 25
            assert rest.is_empty() or rest["day"].max() <= got["day"].min(), name


def test_a_slice_with_enough_users_pools_nobody():
    rows, sampling = _rows(), SamplingConfig(eval_fraction=0.2)
    window = rows.filter(pl.col("day").is_in(WINDOW))
    held = held_out_prompts(window, pl.DataFrame(), sampling)
    out = pooled_slices(held, rows.filter(pl.col("day") < WINDOW[0]), sampling, JudgeDataConfig(min_slice_users=0))
    assert not out.rows["pooled"].any() and out.rows.height == held.height
    with pytest.raises(ValueError, match="split"):
        pooled_slices(window, window, sampling)
