from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from evaluation.winrate import EVAL_RECORDS_SCHEMA, eval_records, judge_outcomes, pair_generations, win_rate
from evaluation.winrate_config import WinRateConfig
from pipeline import schema
from tests.evaluation.winrate_sides import length_judge, side


def test_outcomes_count_ties_as_half_within_tolerance():
    ids = ["a", "b", "c", "d"]
    new = side(ids, ["eval_user"] * 4, ["xxxxx", "xxx", "x", "xx"])
    prev = side(ids, ["eval_user"] * 4, ["xxx", "xxx", "xxx", "x"])
    # diffs: +2 win, 0 tie, -2 loss, +1 tie under tolerance 1
    res = win_rate(new, prev, pointwise=length_judge, config=WinRateConfig(pointwise_tie_tolerance=1.0))
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
    new = side(ids, slices, ["long reply"] * 20 + ["s"] * 20)
    prev = side(ids, slices, ["short"] * 40)
    res = win_rate(new, prev, pointwise={"rm": length_judge})
    wr = dict(zip(res.summary["slice"], res.summary["win_rate"]))
    assert wr == {"eval_internal": 1.0, "eval_user": 0.0}
    assert set(res.summary.columns) >= {"slice", "judge", "n", "win_rate", "ci_low", "ci_high"}


def test_pairwise_both_orders_cancels_position_bias():
    ids = [f"p{i}" for i in range(10)]
    new = side(ids, ["eval_user"] * 10, ["same"] * 10)
    prev = side(ids, ["eval_user"] * 10, ["same"] * 10)

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
    new = side(ids, ["eval_internal"] * 3, ["aaaa", "a", "aa"])
    prev = side(ids, ["eval_internal"] * 3, ["aa", "aaaa", "aa"])

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
    new = side(
        ["a", "b", "c", "d", "e", "e"],
        ["eval_user"] * 5 + ["eval_user"],
        ["r", "r", None, "r", "r", "r"],
        ["ca", "cb", "cc", "cd-new", "ce", "ce"],
    )
    prev = side(
        ["a", "c", "d", "f", "g"],
        ["eval_user", "eval_user", "eval_user", "eval_user", "train"],
        ["r", "r", "r", "r", "r"],
        ["ca", "cc", "cd", "cf", "cg"],
    )
    new = pl.concat([new, side(["g"], ["train"], ["r"], ["cg"])])
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
    new = side(ids, ["eval_user"] * 3, ["x", "y", "z"])
    prev = side(ids, ["eval_user"] * 3, ["x", "y", "z"])

    def flaky(contexts, a, b):
        return [0.9, float("nan"), 1.5]

    res = win_rate(new, prev, pairwise=flaky, config=WinRateConfig(pairwise_both_orders=False))
    assert res.outcomes["prompt_id"].to_list() == ["a"]
    assert sorted(res.drops["row_id"].to_list()) == ["b", "c"]
    assert set(res.drops["reason_code"]) == {"judge_invalid_output"}


def test_judge_returning_wrong_length_is_an_error():
    new = side(["a", "b"], ["eval_user"] * 2, ["x", "y"])
    with pytest.raises(ValueError, match="one number per item"):
        win_rate(new, new, pointwise=lambda c, r: [1.0])
    with pytest.raises(ValueError, match="no judge"):
        win_rate(new, new)


def test_outcome_frame_has_scores_per_judge():
    ids = ["a", "b"]
    new = side(ids, ["eval_user"] * 2, ["xx", "x"])
    prev = side(ids, ["eval_user"] * 2, ["x", "x"])
    paired, _ = pair_generations(new, prev)
    outcomes, drops = judge_outcomes(
        paired, pointwise={"len": length_judge}, pairwise={"pref": lambda c, a, b: [0.8] * len(a)}
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
