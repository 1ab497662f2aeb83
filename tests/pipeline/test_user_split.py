from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from pipeline.sampling import SamplingConfig, sample_pool
from pipeline.user_split import assign_split, held_out_prompts, held_out_rows
from tests.pipeline.prompt_frames import DAY, prompts_frame


def test_user_split_is_stable_across_days_and_monotone_in_eval_fraction():
    day1 = prompts_frame([500], n_users=300, seed=1)
    day2 = prompts_frame([700], n_users=300, seed=2).with_columns(pl.lit(DAY + dt.timedelta(days=1)).alias("day"))
    config = SamplingConfig(retain_fraction=1.0, internal_eval_fraction=0.1)  # synthetic source varies per row
    s1 = sample_pool(day1, config)[0].select("user_hash", held=pl.col("split") != "train").unique()
    s2 = sample_pool(day2, config)[0].select("user_hash", held=pl.col("split") != "train").unique()
    both = s1.join(s2, on="user_hash")
    assert both.height > 100
    assert (both["held"] == both["held_right"]).all()

    users = pl.Series([f"u_{i}" for i in range(1000)])
    source = pl.Series(["external"] * 1000)
    small = assign_split(users, source, SamplingConfig(eval_fraction=0.1, internal_eval_fraction=0.1)) != "train"
    large = assign_split(users, source, SamplingConfig(eval_fraction=0.3, internal_eval_fraction=0.3)) != "train"
    assert (~small | large).all() and large.sum() > small.sum()
    salted = assign_split(users, source, SamplingConfig(eval_fraction=0.1, split_salt="other")) != "train"
    assert not (salted == small).all()


def test_internal_users_are_held_out_at_their_own_rate():
    users = pl.Series([f"u{i}" for i in range(4000)])
    source = pl.Series(["internal" if i % 10 == 0 else "external" for i in range(4000)])
    split = assign_split(users, source, SamplingConfig(eval_fraction=0.1, internal_eval_fraction=0.5))
    frame = pl.DataFrame({"source": source, "held": split != "train"})
    rates = dict(frame.group_by("source").agg(pl.col("held").mean()).iter_rows())
    assert rates["internal"] == pytest.approx(0.5, abs=0.06)
    assert rates["external"] == pytest.approx(0.1, abs=0.02)


def test_held_out_rows_keep_every_prompt_of_a_held_out_user_and_none_of_a_training_user():
    frame = prompts_frame([600, 400], n_users=300, internal_share=0.1, seed=4)
    config = SamplingConfig(retain_fraction=0.3, eval_fraction=0.2, internal_eval_fraction=0.5)
    pool = sample_pool(frame, config)[0]
    held = held_out_rows(frame, config)
    split = assign_split(frame["user_hash"], frame["source"], config)
    # exactly the rows the split holds out, each with its slice, whatever the pool's thinning kept
    assert sorted(held["prompt_id"]) == sorted(frame.filter(split != "train")["prompt_id"])
    assert set(held["split"]) == {"eval_internal", "eval_user"}
    assert held.filter((pl.col("split") == "eval_internal") != (pl.col("source") == "internal")).height == 0
    pooled = pool.filter(pl.col("split") != "train")
    assert set(pooled["prompt_id"]) < set(held["prompt_id"]) and held.height > 2 * pooled.height
    assert not set(held["user_hash"]) & set(pool.filter(pl.col("split") == "train")["user_hash"])

    # a user some training saw is left out, whatever the split says
    some = pl.Series(held["user_hash"].unique().sort()[:3])
    fewer = held_out_rows(frame, config, exclude_users=some)
    assert not set(fewer["user_hash"]) & set(some)
    assert fewer.height == held.filter(~pl.col("user_hash").is_in(some.implode())).height > 0
    assert held_out_rows(frame.head(0), config).is_empty()


def test_evaluation_reads_every_deduped_turn_of_a_held_out_user():
    n = 600
    unique = pl.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(n)],
            "user_hash": [f"u{i % 150}" for i in range(n)],
            "source": ["internal" if i % 150 < 15 else "external" for i in range(n)],
            "cluster_id": [i % 4 for i in range(n)],
            "day": [DAY] * n,
        }
    )
    sampling = SamplingConfig(retain_fraction=0.3, eval_fraction=0.2, internal_eval_fraction=0.5)
    pool = sample_pool(unique, sampling)[0]
    # one held-out user the pool's split puts on the training side (its source differed there): never evaluated
    moved = pool.filter(pl.col("split") == "eval_user")["user_hash"][0]
    pool = pool.with_columns(
        pl.when(pl.col("user_hash") == moved).then(pl.lit("train")).otherwise("split").alias("split")
    )
    unique = unique.drop("cluster_id")

    held = held_out_prompts(unique, pool, sampling)
    expected = held_out_rows(unique, sampling).filter(pl.col("user_hash") != moved)
    assert sorted(held["prompt_id"]) == sorted(expected["prompt_id"])
    assert held.height > 2 * pool.filter(pl.col("split") != "train").height
    assert moved not in set(held["user_hash"])
    # without the deduped turns (an old lake), the pool's held-out rows
    fallback = held_out_prompts(unique.head(0), pool, sampling)
    assert sorted(fallback["prompt_id"]) == sorted(pool.filter(pl.col("split") != "train")["prompt_id"])
