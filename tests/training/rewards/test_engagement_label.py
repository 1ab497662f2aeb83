"""The engagement label is chosen by discrimination within turn-position strata, on planted frames."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from training.rewards.engagement_label import (
    LABEL_MEASUREMENTS,
    TARGET,
    LabelChoiceConfig,
    choose_label,
    label_thresholds,
    with_target,
)
from training.rewards.reward_eval import auc_within_strata

WARM, COLD = "That sounds fun, what did you like most about it?", "ok."


def _conversations(n: int, seed: int) -> pl.DataFrame:
    """Served turns of `n` conversations of 2 to 8 turns. A conversation ends where its recording ends (the
    last turn is not continued, whatever was said), but a warm reply draws a long next turn."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n):
        turns = int(rng.integers(2, 9))
        for t in range(turns):
            warm = bool(rng.random() < 0.5)
            last = t == turns - 1
            rows.append(
                {
                    "prompt_id": f"s{seed}-c{c}-t{t}",
                    "conversation_id": f"s{seed}-c{c}",
                    "cut_turn": 2 * t,
                    "history": [{"role": "user", "content": f"tell me about day {t}"}],
                    "served_response": WARM if warm else COLD,
                    "continued": not last,
                    "reply_len": None if last else int(rng.integers(60, 120) if warm else rng.integers(1, 20)),
                    "depth_after": turns - 1 - t,
                }
            )
    return pl.DataFrame(rows)


class _Lookup:
    """A model that scores a reply by the mean target its text had in training (it reads only the reply)."""

    def __init__(self, rows: pl.DataFrame):
        means = rows.group_by("served_response").agg(pl.col(TARGET).cast(pl.Float64).mean())
        self.means = dict(means.iter_rows())

    def score(self, contexts, responses):
        return np.array([self.means.get(r, 0.5) for r in responses])


class _Position:
    """A model that learnt only where conversations end: late turns score low."""

    def __init__(self, rows: pl.DataFrame):
        pass

    def score(self, contexts, responses):
        return -np.array([float(c[-1]["content"].split()[-1]) for c in contexts])


def test_a_score_of_the_turn_position_alone_scores_one_half_within_strata():
    rows = _conversations(300, seed=0)
    y, position = rows["continued"].to_numpy(), rows["cut_turn"].to_numpy()
    # across the strata, position predicts the end of a conversation well
    assert roc_auc_score(y, -position) > 0.7
    within, rows_in_strata = auc_within_strata(y, -position, position)
    assert within == pytest.approx(0.5)
    # the first turn never ends a conversation and the eighth always does: one class each, left out
    assert rows_in_strata == rows.filter(pl.col("cut_turn").is_between(2, 12)).height
    # a score that knows the label is perfect within strata too
    assert auc_within_strata(y, y.astype(float), position)[0] == pytest.approx(1.0)


def test_the_label_users_react_to_is_chosen_and_every_candidate_is_measured():
    train, validation = _conversations(300, seed=1), _conversations(150, seed=2)
    choice = choose_label(train, validation, _Lookup)
    m = choice.measurements
    assert m.schema == LABEL_MEASUREMENTS and m["label"].to_list() == ["continued", "reply_len", "depth_after"]
    by = {r["label"]: r for r in m.iter_rows(named=True)}
    # what the reply says does not tell where a recording ends, but it does tell how long the user answers
    assert abs(by["continued"]["stratified_auc"] - 0.5) < 0.1
    assert by["reply_len"]["stratified_auc"] > 0.75 > by["depth_after"]["stratified_auc"]
    assert choice.label == "reply_len" and m.filter(pl.col("chosen"))["label"].to_list() == ["reply_len"]
    assert choice.threshold == label_thresholds(train)["reply_len"]
    assert isinstance(choice.model, _Lookup)
    summary = choice.summary()
    assert summary["label"] == "reply_len" and summary["continued/stratified_auc"] == by["continued"]["stratified_auc"]


def test_a_model_of_the_position_alone_is_not_chosen_for_it():
    train, validation = _conversations(200, seed=3), _conversations(100, seed=4)
    # the position model reads the turn number from the context; within strata it knows nothing
    choice = choose_label(train, validation, _Position, LabelChoiceConfig(candidates=("continued", "depth_after")))
    assert choice.measurements["stratified_auc"].to_list() == pytest.approx([0.5, 0.5])
    assert choice.label == "continued"  # a tie keeps the candidates' order


def test_targets_and_failures():
    rows = _conversations(20, seed=5)
    t = label_thresholds(rows)
    assert t["continued"] is None and t["depth_after"] == rows["depth_after"].median()
    target = with_target(rows, "reply_len", t["reply_len"])[TARGET]
    assert target.null_count() == 0 and not target.filter(~rows["continued"]).any()
    with pytest.raises(ValueError, match="engagement label"):
        with_target(rows, "thumbs", None)
    with pytest.raises(ValueError, match="candidates"):
        LabelChoiceConfig(candidates=("thumbs",))
    # too few validation rows to measure: the first candidate is learnt, and the record says so
    unmeasured = choose_label(rows, rows.head(3), _Lookup)
    assert unmeasured.label == "continued" and isinstance(unmeasured.model, _Lookup)
    assert unmeasured.measurements["stratified_auc"].null_count() == 3
    assert unmeasured.measurements["detail"][0].startswith("chosen by default, not by measurement")
    flat = rows.with_columns(
        pl.lit(True).alias("continued"), pl.lit(5).alias("reply_len"), pl.lit(1).alias("depth_after")
    )
    with pytest.raises(ValueError, match="no engagement label can be learnt"):
        choose_label(flat, flat, _Lookup)
