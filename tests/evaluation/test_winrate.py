from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from evaluation.winrate import EVAL_RECORDS_SCHEMA, eval_records, judge_outcomes, pair_generations, win_rate
from evaluation.winrate_config import WinRateConfig
from evaluation.winrate_intervals import bootstrap_ci, summarize
from pipeline import schema


def _side(ids, slices, responses, contexts=None):
    return pl.DataFrame(
        {
            "prompt_id": ids,
            "slice": slices,
            "context": contexts or [f"context of {i}" for i in ids],
            "response": responses,
        }
    )


def _length_judge(contexts, responses):
    return [float(len(r)) for r in responses]


def test_outcomes_count_ties_as_half_within_tolerance():
    ids = ["a", "b", "c", "d"]
    new = _side(ids, ["eval_user"] * 4, ["xxxxx", "xxx", "x", "xx"])
    prev = _side(ids, ["eval_user"] * 4, ["xxx", "xxx", "xxx", "x"])
    # diffs: +2 win, 0 tie, -2 loss, +1 tie under tolerance 1
    res = win_rate(new, prev, pointwise=_length_judge, config=WinRateConfig(pointwise_tie_tolerance=1.0))
    outcomes = dict(zip(res.outcomes["prompt_id"], res.outcomes["outcome"]))
    assert outcomes == {"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.5}
    row = res.summary.filter(pl.col("slice") == "eval_user").row(0, named=True)
    assert (row["n"], row["wins"], row["ties"], row["losses"]) == (4, 1, 2, 1)
    assert row["win_rate"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    # the other configured slice had no prompts: reported, not silently absent
    empty = res.summary.filter(pl.col("slice") == "eval_internal").row(0, named=True)
    assert empty["n"] == 0 and empty["win_rate"] is None


def test_slices_are_evaluated_separately():
    ids = [f"p{i}" for i in range(40)]
    slices = ["eval_internal"] * 20 + ["eval_user"] * 20
    new = _side(ids, slices, ["long reply"] * 20 + ["s"] * 20)
    prev = _side(ids, slices, ["short"] * 40)
    res = win_rate(new, prev, pointwise={"rm": _length_judge})
    wr = dict(zip(res.summary["slice"], res.summary["win_rate"]))
    assert wr == {"eval_internal": 1.0, "eval_user": 0.0}
    assert set(res.summary.columns) >= {"slice", "judge", "n", "win_rate", "ci_low", "ci_high"}


def test_pairwise_both_orders_cancels_position_bias():
    ids = [f"p{i}" for i in range(10)]
    new = _side(ids, ["eval_user"] * 10, ["same"] * 10)
    prev = _side(ids, ["eval_user"] * 10, ["same"] * 10)

    def first_position_wins(contexts, a, b):
        return [0.7] * len(a)

    both = win_rate(new, prev, pairwise=first_position_wins)
    one = win_rate(new, prev, pairwise=first_position_wins, config=WinRateConfig(pairwise_both_orders=False))
    assert both.outcomes["p_new"].to_list() == pytest.approx([0.5] * 10)
    assert both.summary.filter(pl.col("slice") == "eval_user")["win_rate"][0] == 0.5
    assert one.summary.filter(pl.col("slice") == "eval_user")["win_rate"][0] == 1.0


@pytest.mark.parametrize("output", ["probability", "logit", "utilities"])
def test_pairwise_output_kinds_agree(output):
    ids = ["w", "l", "t"]
    new = _side(ids, ["eval_internal"] * 3, ["aaaa", "a", "aa"])
    prev = _side(ids, ["eval_internal"] * 3, ["aa", "aaaa", "aa"])

    def judge(contexts, a, b):
        u_a = np.array([len(x) for x in a], dtype=float)
        u_b = np.array([len(x) for x in b], dtype=float)
        if output == "utilities":
            return u_a, u_b
        logit = u_a - u_b
        return logit if output == "logit" else 1 / (1 + np.exp(-logit))

    res = win_rate(new, prev, pairwise={"bt": judge}, config=WinRateConfig(pairwise_output=output))
    outcomes = dict(zip(res.outcomes["prompt_id"], res.outcomes["outcome"]))
    assert outcomes == {"w": 1.0, "l": 0.0, "t": 0.5}


def test_pairing_drops_are_accounted_for():
    new = _side(
        ["a", "b", "c", "d", "e", "e"],
        ["eval_user"] * 5 + ["eval_user"],
        ["r", "r", None, "r", "r", "r"],
        ["ca", "cb", "cc", "cd-new", "ce", "ce"],
    )
    prev = _side(
        ["a", "c", "d", "f", "g"],
        ["eval_user", "eval_user", "eval_user", "eval_user", "train"],
        ["r", "r", "r", "r", "r"],
        ["ca", "cc", "cd", "cf", "cg"],
    )
    new = pl.concat([new, _side(["g"], ["train"], ["r"], ["cg"])])
    paired, drops = pair_generations(new, prev)
    assert paired["prompt_id"].to_list() == ["a"]
    reasons = dict(zip(drops["row_id"], drops["reason_code"]))
    assert reasons == {
        "b": "missing_in_prev",
        "c": "null_response",
        "d": "context_mismatch",
        "e": "duplicate_prompt_new",
        "f": "missing_in_new",
        "g": "slice_not_evaluated",
    }
    assert drops.schema == schema.DROPS


def test_invalid_judge_outputs_are_dropped_not_counted():
    ids = ["a", "b", "c"]
    new = _side(ids, ["eval_user"] * 3, ["x", "y", "z"])
    prev = _side(ids, ["eval_user"] * 3, ["x", "y", "z"])

    def flaky(contexts, a, b):
        return [0.9, float("nan"), 1.5]

    res = win_rate(new, prev, pairwise=flaky, config=WinRateConfig(pairwise_both_orders=False))
    assert res.outcomes["prompt_id"].to_list() == ["a"]
    assert sorted(res.drops["row_id"].to_list()) == ["b", "c"]
    assert set(res.drops["reason_code"]) == {"judge_invalid_output"}


def test_judge_returning_wrong_length_is_an_error():
    new = _side(["a", "b"], ["eval_user"] * 2, ["x", "y"])
    with pytest.raises(ValueError, match="one number per item"):
        win_rate(new, new, pointwise=lambda c, r: [1.0])
    with pytest.raises(ValueError, match="no judge"):
        win_rate(new, new)


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


def test_outcome_frame_has_scores_per_judge():
    ids = ["a", "b"]
    new = _side(ids, ["eval_user"] * 2, ["xx", "x"])
    prev = _side(ids, ["eval_user"] * 2, ["x", "x"])
    paired, _ = pair_generations(new, prev)
    outcomes, drops = judge_outcomes(
        paired, pointwise={"len": _length_judge}, pairwise={"pref": lambda c, a, b: [0.8] * len(a)}
    )
    assert drops.height == 0
    assert outcomes.filter(pl.col("judge") == "len")["score_new"].to_list() == [2.0, 1.0]
    assert set(outcomes["kind"]) == {"pointwise", "pairwise"}
    records = eval_records(outcomes, "gen-3")
    assert records.schema == EVAL_RECORDS_SCHEMA and records.height == 4
    assert set(records["metric"]) == {"winrate/len", "winrate/pref"} and set(records["generation"]) == {"gen-3"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"slices": ()}, "slices"),
        ({"pointwise_tie_tolerance": -1}, "pointwise_tie_tolerance"),
        ({"pairwise_tie_tolerance": 0.5}, "pairwise_tie_tolerance"),
        ({"pairwise_output": "score"}, "pairwise_output"),
        ({"ci_method": "studentized"}, "ci_method"),
        ({"confidence_level": 1.0}, "confidence_level"),
        ({"n_resamples": 10}, "n_resamples"),
    ],
)
def test_bad_config_names_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WinRateConfig(**kwargs)


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
    new = _side(ids, ["eval_user"] * 30, ["long reply"] * 15 + ["s"] * 15).with_columns(
        pl.Series("user_hash", [f"u{i % 3}" for i in range(30)]),
        pl.Series("conversation_id", [f"c{i // 2}" for i in range(30)]),
    )
    prev = _side(ids, ["eval_user"] * 30, ["short"] * 30)
    res = win_rate(new, prev, pointwise={"rm": _length_judge})
    row = res.summary.filter(pl.col("slice") == "eval_user").row(0, named=True)
    assert (row["unit"], row["users"], row["conversations"]) == ("conversation", 3, 15)
    assert set(res.outcomes["user_hash"]) == {"u0", "u1", "u2"}
    # replies that do not say who they belong to are resampled by prompt, and the counts are unknown
    bare = win_rate(_side(ids, ["eval_user"] * 30, ["x"] * 30), prev, pointwise={"rm": _length_judge})
    row = bare.summary.filter(pl.col("slice") == "eval_user").row(0, named=True)
    assert (row["unit"], row["users"], row["conversations"]) == ("prompt", None, None)
