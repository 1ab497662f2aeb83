import datetime as dt

import polars as pl
import pytest

from tests.training.tiny_policy import cands, drop_reasons, prompts_frame
from training.policy.rl_pool import RL_POOL, RLPoolConfig, select_rl_prompts


def test_rl_pool_picks_near_policy_hard_prompts():
    day = dt.date(2024, 5, 20)
    prompts = prompts_frame(8, day=day).with_columns(
        served_by=pl.Series(["gen1"] * 6 + ["gen0", "gen1"]),
        day=pl.Series([day] * 7 + [day - dt.timedelta(days=30)]),
    )
    # p0/p1 low mean; p2 high variance; p3..p5 middling and steady; p6 off-policy; p7 stale
    scores = {
        "p0": [0.05, 0.05],
        "p1": [0.1, 0.1],
        "p2": [0.2, 1.0],
        "p3": [0.5, 0.5],
        "p4": [0.5, 0.55],
        "p5": [0.6, 0.6],
        "p6": [0.0, 0.0],
        "p7": [0.0, 0.0],
    }
    c = cands(
        [(p, i, f"r{i}", s) for p, ss in scores.items() for i, s in enumerate(ss)] + [("p5", 2, "unscored", None)]
    )
    # linear quantiles: mean cut 0.2 (p0, p1), variance cut ~0.08 (p2)
    cfg = RLPoolConfig(policy_names=("gen1",), recent_days=7, low_mean_quantile=0.25, high_var_quantile=0.9)
    res = select_rl_prompts(prompts, c, cfg)
    assert res.frame.schema == RL_POOL
    assert dict(zip(res.frame["prompt_id"], res.frame["reason"])) == {
        "p0": "low_mean",
        "p1": "low_mean",
        "p2": "high_variance",
    }
    reasons = drop_reasons(res)
    assert reasons["p6"] == "off_policy" and reasons["p7"] == "stale_day"
    assert {reasons[p] for p in ("p3", "p4", "p5")} == {"not_hard"}
    assert res.frame.filter(pl.col("prompt_id") == "p5").is_empty()
    assert (
        res.dataset.column_names == ["prompt", "prompt_id", "instructions"]
        and res.dataset[0]["prompt"][-1]["role"] == "user"
    )
    capped = select_rl_prompts(
        prompts, c, RLPoolConfig(policy_names=("gen1",), max_prompts=1, low_mean_quantile=0.25, high_var_quantile=0.9)
    )
    assert capped.frame["prompt_id"].to_list() == ["p0"]  # the lowest mean goes first
    assert capped.manifest["drops_by_reason"]["rl_pool/pool_cap"] == 2


def test_rl_pool_too_few_samples_and_validation():
    res = select_rl_prompts(prompts_frame(2), cands([("p0", 0, "a", 0.1)]), RLPoolConfig())
    assert set(drop_reasons(res).values()) == {"too_few_samples"} and res.frame.is_empty()
    with pytest.raises(ValueError, match="min_samples"):
        RLPoolConfig(min_samples=1)
    with pytest.raises(ValueError, match="high_var_quantile"):
        RLPoolConfig(high_var_quantile=1.5)
