"""The test cards are read by the report and the benches only: no gate, threshold or choice of parent sees them."""

import json

import numpy as np
import polars as pl

from evaluation.comparison import TEST_STAGE, Evaluation
from evaluation.gate_config import GateConfig
from evaluation.offline_eval import OfflineEvalConfig, select_eval_prompts, steerability_prompts
from evaluation.record import improvement
from tests.evaluation.eval_pool import eval_pool

CONFIG = OfflineEvalConfig(steerability_samples=1)


class LengthScorer:
    """A stand-in judge: longer replies score higher."""

    def score(self, messages, texts):
        return np.array([len(t) for t in texts], dtype=np.float64)


def _evaluation(test_reply: str) -> Evaluation:
    evals, _ = select_eval_prompts(eval_pool("2026-01-04"), 3, 0)
    steer = steerability_prompts(CONFIG)
    test = steerability_prompts(CONFIG, "test")
    parent = ["Nice, tell me more?"] * (evals.height + steer.height + test.height)
    new = ["That sounds lovely. What happened next?"] * evals.height + ["sure thing!"] * steer.height
    new += [test_reply] * test.height
    tokens = {role: [5] * len(parent) for role in ("new", "parent")}
    ev = Evaluation(
        "gen-2", evals, steer, {"new": new, "parent": parent}, {"new": "gen-2", "parent": "gen-1"}, tokens, 48, test
    )
    ev.judge(LengthScorer(), None, n_resamples=200)
    return ev


def _gate_table(ev: Evaluation) -> pl.DataFrame:
    gates = ev.gates(None, GateConfig())
    return pl.DataFrame(
        [
            {"gate": n, "severity": g.severity, "detail": g.detail, "metadata": json.dumps(g.metadata, default=str)}
            for n, g in gates.items()
        ]
    )


def test_no_gate_and_no_choice_of_parent_reads_the_test_cards():
    # the same policy everywhere but on the test cards, where one answers in capitals with emoji and the other
    # keeps the cards' rules far better: the test rates differ, nothing a decision reads does
    good = _evaluation("I'm sorry, no. Which part of the day do you like best?")
    bad = _evaluation("NO!!! 🎉🎉🎉 " * 30)
    rate = {
        ev: ev.test_summary.filter((pl.col("level") == "overall") & (pl.col("role") == "new")) for ev in (good, bad)
    }
    assert rate[good]["following_rate"][0] != rate[bad]["following_rate"][0]
    assert _gate_table(good).equals(_gate_table(bad))
    assert improvement(_gate_table(good), None, False) == improvement(_gate_table(bad), None, False)
    # the test replies are recorded, apart from the held-out cards' and under their own slice and metric
    records = good.records()
    test_rows = records.filter(pl.col("slice") == TEST_STAGE)
    assert test_rows.height and test_rows["metric"].str.starts_with(f"{TEST_STAGE}/").all()
    assert not records.filter(pl.col("slice") == "steerability")["prompt_id"].is_in(test_rows["prompt_id"]).any()
    assert set(good.responses()["slice"]) >= {"steerability", TEST_STAGE}


def test_the_paired_interval_does_not_depend_on_the_order_of_the_prompts():
    from evaluation.steerability import following_difference

    base = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(30)], "value": [float(i % 3 == 0) for i in range(30)]})
    new = base.with_columns(((pl.col("value") + (pl.int_range(30) % 4 == 0)) > 0).cast(pl.Float64))
    shuffled = following_difference(base.sample(fraction=1.0, shuffle=True, seed=1), new.reverse())
    assert following_difference(base, new) == shuffled
