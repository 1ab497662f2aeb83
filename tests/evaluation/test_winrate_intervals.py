from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from evaluation.winrate import win_rate
from evaluation.winrate_config import WinRateConfig
from evaluation.winrate_intervals import bootstrap_ci, summarize
from tests.evaluation.winrate_sides import length_judge, side


def test_bootstrap_interval_is_seeded_and_sensible():
    rng = np.random.default_rng(3)
    values = rng.choice([0.0, 0.5, 1.0], size=500, p=[0.3, 0.2, 0.5])
    cfg = WinRateConfig(seed=7)
    lo1, hi1 = bootstrap_ci(values, cfg, np.random.default_rng(cfg.seed))
    lo2, hi2 = bootstrap_ci(values, cfg, np.random.default_rng(cfg.seed))
    assert (lo1, hi1) == (lo2, hi2)
    assert lo1 < values.mean() < hi1
    # width close to the normal approximation 2 * 1.96 * sd / sqrt(n)
    expected = 2 * 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert hi1 - lo1 == pytest.approx(expected, rel=0.15)
    assert bootstrap_ci(np.ones(20), cfg, np.random.default_rng(0)) == (1.0, 1.0)


def test_interval_covers_true_win_rate_in_repeated_experiments():
    # a judge whose outcomes are Bernoulli(0.58): the 95% interval must cover 0.58 most of the time
    cfg = WinRateConfig(n_resamples=500, ci_method="percentile")
    rng = np.random.default_rng(11)
    covered = 0
    for _rep in range(60):
        o = (rng.random(300) < 0.58).astype(float)
        out = pl.DataFrame(
            {"prompt_id": [f"{i}" for i in range(300)], "slice": "eval_user", "judge": "j", "outcome": o}
        )
        row = summarize(out, cfg).filter(pl.col("slice") == "eval_user").row(0, named=True)
        covered += row["ci_low"] <= 0.58 <= row["ci_high"]
    assert covered >= 52  # 95% nominal; 52/60 leaves room for sampling noise


def test_user_clustered_interval_is_wider_when_a_few_users_hold_most_prompts():
    # 25 users: 5 hold 40 prompts each and judge them alike (their taste, not the replies, decides), 20 hold one
    rng = np.random.default_rng(4)
    rows = []
    for u in range(25):
        heavy = u < 5
        lean = rng.random() < 0.5
        for k in range(40 if heavy else 1):
            win = rng.random() < (0.85 if lean else 0.15) if heavy else rng.random() < 0.5
            rows.append(
                {
                    "prompt_id": f"u{u}-p{k}",
                    "slice": "eval_user",
                    "user_hash": f"u{u}",
                    "conversation_id": f"u{u}-c{k}",
                    "judge": "j",
                    "outcome": float(win),
                }
            )
    outcomes = pl.DataFrame(rows)
    row = summarize(outcomes, WinRateConfig(n_resamples=1000)).filter(pl.col("slice") == "eval_user").row(0, named=True)
    assert (row["unit"], row["users"], row["conversations"], row["n"]) == ("user", 25, 220, 220)
    clustered, by_prompt = row["ci_high"] - row["ci_low"], row["prompt_ci_high"] - row["prompt_ci_low"]
    assert clustered > 1.5 * by_prompt, (clustered, by_prompt)
    # asked for prompts, the interval is the prompt-level one
    flat = summarize(outcomes, WinRateConfig(n_resamples=1000, ci_unit="prompt")).row(1, named=True)
    assert flat["unit"] == "prompt" and flat["ci_high"] - flat["ci_low"] == pytest.approx(by_prompt, rel=0.2)


def test_a_slice_with_few_users_is_resampled_by_conversation_and_says_so():
    ids = [f"p{i}" for i in range(30)]
    new = side(ids, ["eval_user"] * 30, ["long reply"] * 15 + ["s"] * 15).with_columns(
        pl.Series("user_hash", [f"u{i % 3}" for i in range(30)]),
        pl.Series("conversation_id", [f"c{i // 2}" for i in range(30)]),
    )
    prev = side(ids, ["eval_user"] * 30, ["short"] * 30)
    res = win_rate(new, prev, pointwise={"rm": length_judge})
    row = res.summary.filter(pl.col("slice") == "eval_user").row(0, named=True)
    assert (row["unit"], row["users"], row["conversations"]) == ("conversation", 3, 15)
    assert set(res.outcomes["user_hash"]) == {"u0", "u1", "u2"}
    # replies that do not say who they belong to are resampled by prompt, and the counts are unknown
    bare = win_rate(side(ids, ["eval_user"] * 30, ["x"] * 30), prev, pointwise={"rm": length_judge})
    row = bare.summary.filter(pl.col("slice") == "eval_user").row(0, named=True)
    assert (row["unit"], row["users"], row["conversations"]) == ("prompt", None, None)
