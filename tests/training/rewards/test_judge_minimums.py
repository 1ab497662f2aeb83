"""A judge's minimum of training data and the record it leaves when the traffic falls below it."""

import polars as pl
import pytest

from training.rewards.judge_minimums import (
    JudgeMinimums,
    not_trained,
    not_trained_row,
    pairwise_shortfall,
    pointwise_shortfall,
    write_not_trained,
)
from training.rewards.reward_eval import EVAL_METRICS


def test_pairs_below_the_minimum_are_a_shortfall_with_its_count_and_fix():
    minimums = JudgeMinimums(min_pairs=10)
    assert pairwise_shortfall(10, minimums) is None
    short = pairwise_shortfall(2, minimums)
    assert (short.judge, short.count, short.minimum) == ("pairwise", 2, 10)
    assert short.reason == "not trained: 2 preference pairs (minimum 10)"
    assert "annotations_path" in short.fix and "window_days" in short.fix


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([True] * 15 + [False] * 5, None),
        ([True] * 10 + [None] * 30, "not trained: 10 labelled replies (minimum 20)"),
        ([True] * 40, "not trained: 0 replies after which the user stopped (minimum 5)"),
        ([False] * 38 + [True] * 2, "not trained: 2 replies after which the user went on (minimum 5)"),
    ],
)
def test_the_pointwise_judge_needs_rows_and_both_outcomes(labels, expected):
    short = pointwise_shortfall(pl.Series(labels, dtype=pl.Boolean), JudgeMinimums())
    assert (short.reason if short else None) == expected


def test_a_bad_minimum_fails_naming_the_setting():
    with pytest.raises(ValueError, match="min_pairs=0"):
        JudgeMinimums(min_pairs=0)
    with pytest.raises(ValueError, match="min_pointwise_rows=6"):
        JudgeMinimums(min_pointwise_rows=6, min_pointwise_per_class=5)


def test_a_judge_folder_records_why_it_holds_no_model(tmp_path):
    short = pairwise_shortfall(3, JudgeMinimums())
    assert not_trained(tmp_path / "reward_pairwise") is None
    write_not_trained(tmp_path / "reward_pairwise", short)
    record = not_trained(tmp_path / "reward_pairwise")
    assert record["trained"] is False and record["count"] == 3 and record["minimum"] == 10
    assert "not trained" in (tmp_path / "reward_pairwise" / "README.md").read_text()
    row = pl.DataFrame([not_trained_row(short)], schema=EVAL_METRICS)
    assert row["n"][0] == 3 and row["detail"][0].startswith("not trained: 3 preference pairs")
