"""The offline evaluation's slices, read from a planted lake: the window's held-out users, pooled with held-out
users of earlier days that nothing trained on when the window holds too few."""

from datetime import date, timedelta

import polars as pl

from assets.generation import GenerationPlan
from assets.release import held_out_slices
from pipeline.judge_data import JudgeDataConfig, time_ordered_split
from pipeline.lake import Lake
from pipeline.sampling import SamplingConfig
from pipeline.user_split import assign_split

DAYS = [date(2026, 1, 1) + timedelta(days=k) for k in range(5)]
PLAN = GenerationPlan("gen-2", 2, "gen-1", [d.isoformat() for d in DAYS[-2:]], "2026-01-06T06:00:00+00:00")


def _day(day: date, k: int) -> pl.DataFrame:
    users = [f"user-{(k * 31 + i) % 240:04d}" for i in range(50)]
    return pl.DataFrame(
        {
            "prompt_id": [f"{day}-p{i}" for i in range(50)],
            "conversation_id": [f"{day}-c{i}" for i in range(50)],
            "user_hash": users,
            "source": ["internal" if int(u[-4:]) % 8 == 0 else "external" for u in users],
            "text": [f"user: hello {i}" for i in range(50)],
            "day": [day] * 50,
        }
    )


def test_small_slices_pool_earlier_held_out_users_that_nothing_trained_on(tmp_path):
    lake, sampling = Lake(tmp_path), SamplingConfig()
    policy_trained = set()
    for k, day in enumerate(DAYS):
        frame = _day(day, k)
        lake.write("unique_prompts", day, frame)
        split = assign_split(frame["user_hash"], frame["source"], sampling)
        if k == 0:
            # a user this split holds out, but whom a day's pool once put in training (a policy learnt from them)
            held = frame.filter(split != "train")["user_hash"].sort()[0]
            split = pl.Series("split", ["train" if u == held else s for u, s in zip(frame["user_hash"], split)])
            policy_trained.add(held)
        lake.write("prompts", day, frame.with_columns(split.alias("split")))
    pool = pl.concat([lake.read("prompts", d) for d in PLAN.day_dates])
    slices = held_out_slices(lake, PLAN, pool, sampling, JudgeDataConfig())

    per_slice = slices.users_per_slice()
    window = slices.rows.filter(~pl.col("pooled"))
    assert set(window["day"]) <= set(PLAN.day_dates)
    assert per_slice["eval_user"]["window"] < 20 and per_slice["eval_user"]["pooled"] > 0
    pooled = slices.users.filter(pl.col("pooled"))
    assert (pooled["day"] < DAYS[-2]).all()
    # nobody pooled was trained on: not by the judges (training users of every day up to the window) nor by a policy
    history = pl.concat([lake.read("unique_prompts", d) for d in DAYS])
    judges = set(time_ordered_split(history, PLAN.day_dates, sampling).train["user_hash"])
    assert not set(pooled["user_hash"]) & (judges | policy_trained)
    assert not set(pooled["user_hash"]) & set(window["user_hash"])
    assert slices.dropped["trained_user"] >= 1
