from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from evaluation.user_simulator import UserSimulatorConfig, fit_user_simulator
from tests.evaluation.engagement_turns import COLD, WARM, engagement_turns


def test_engagement_model_learns_the_signal_and_never_sees_excluded_users():
    turns = engagement_turns()
    excluded = [f"user{u}" for u in range(0, 120, 3)]
    # 40% of the users held out: the AUC of a smaller held-out set swings by ~0.06 with the split alone
    held = UserSimulatorConfig(holdout_fraction=0.4)
    sim, counters = fit_user_simulator(turns, excluded_users=excluded, excluded_conversations=["c1"], config=held)
    assert counters["dropped_excluded_user"] == 40 * 4
    assert counters["dropped_replayed_conversation"] == 4
    assert counters["rows_used"] == turns.height - 41 * 4 == sim.summary["rows"]
    assert sim.summary["users"] == 120 - 41
    assert sim.summary["heldout_auc"] > 0.75
    p = sim.p_continue(["I went hiking"] * 2, ["Oh nice, tell me more, how did it go?", "no."])
    assert p[0] > p[1] + 0.3
    assert "logreg" in sim.name and f"{120 - 41} training users" in sim.name
    # the training data is named by its content hash: excluding other users changes it
    other, _ = fit_user_simulator(turns, excluded_users=excluded[:-1])
    assert other.summary["data_sha256"] != sim.summary["data_sha256"]


def test_the_simulator_is_validated_on_users_it_never_saw():
    turns, others = (
        engagement_turns(),
        engagement_turns(n_users=30, seed=1).with_columns(pl.format("other{}", "user_hash").alias("user_hash")),
    )
    # a validation user who is also in the training turns is not a validation user
    validation = pl.concat([others, turns.filter(pl.col("user_hash") == "user0")])
    sim, counters = fit_user_simulator(turns, validation=validation)
    assert sim.summary["rows"] == turns.height and sim.summary["users"] == 120
    assert sim.summary["heldout_rows"] == others.height and sim.summary["heldout_users"] == 30
    assert sim.summary["heldout_auc"] > 0.75
    # it learns from every training turn: the same model as without a validation set
    alone, _ = fit_user_simulator(turns, config=UserSimulatorConfig(holdout_fraction=0.0))
    replies = WARM + COLD
    assert np.allclose(sim.p_continue(["I went hiking"] * 4, replies), alone.p_continue(["I went hiking"] * 4, replies))


def test_too_few_turns_fail_with_the_fix():
    with pytest.raises(ValueError, match="widen the generation's window"):
        fit_user_simulator(engagement_turns(n_users=10), config=UserSimulatorConfig(min_rows=100))
    with pytest.raises(ValueError, match="lack the columns"):
        fit_user_simulator(pl.DataFrame({"reply": ["x"]}))


def test_too_few_turns_leave_a_readout_with_insufficient_evidence():
    from evaluation import ab_test
    from evaluation.ab_config import AbConfig
    from evaluation.simulated_ab import no_readout
    from evaluation.user_simulator import TooFewTurns

    with pytest.raises(TooFewTurns) as caught:
        fit_user_simulator(engagement_turns(n_users=10), config=UserSimulatorConfig(min_rows=100))
    ev = caught.value.evidence()
    assert ev["trained"] is False and ev["sufficient"] is False and ev["min_rows"] == 100
    assert ev["reason"] == f"not trained: {ev['turns']} usable turns (minimum 100)"
    readout = no_readout(AbConfig())
    assert readout.lifts["lift"].is_null().all() and readout.arms["users"].to_list() == [0, 0]
    verdict, reason = ab_test.ab_decision(readout.lifts, readout.srm, insufficient=f"the user simulator {ev['reason']}")
    assert verdict == "insufficient" and "not trained" in reason
