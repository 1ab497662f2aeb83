from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from evaluation.ab_config import EVENTS_SCHEMA, EXPOSURES_SCHEMA, AbConfig
from evaluation.ab_stats import lift_estimates
from evaluation.simulated_ab import (
    ArmReplies,
    SimulatedAbConfig,
    expected_lifts,
    prompt_intervals,
    simulate_arm_users,
    simulated_readout,
)
from evaluation.user_simulator import fit_user_simulator
from tests.evaluation.engagement_turns import COLD, WARM, engagement_turns


def _responses(control: list[str], treatment: list[str]) -> pl.DataFrame:
    rows = []
    for policy, replies in (("gen-0", control), ("gen-1", treatment)):
        for i, reply in enumerate(replies):
            context = [{"role": "system", "content": "a card"}, {"role": "user", "content": "I went hiking"}]
            rows.append({"prompt_id": f"p{i:03d}", "policy": policy, "context": json.dumps(context), "response": reply})
    return pl.DataFrame(rows)


def test_preferred_replies_give_a_positive_lift_through_the_readout():
    sim, _ = fit_user_simulator(engagement_turns())
    replies = ArmReplies.from_responses(
        _responses([COLD[i % 2] for i in range(20)], [WARM[i % 2] for i in range(20)]), "gen-0", "gen-1"
    )
    assert replies.context == ["I went hiking"] * 20 and replies.conversation[0] == "p000"
    cfg = SimulatedAbConfig(n_users=8000, seed=3)
    out = simulated_readout(sim, replies, cfg, AbConfig(start=cfg.start, n_bootstrap=500))
    assert out.label.startswith("simulated from tfidf-char2-4+logreg")
    assert out.exposures.schema == EXPOSURES_SCHEMA and out.events.schema == EVENTS_SCHEMA
    assert out.expected["breadth"] > 0.2 and out.expected["depth"] > 0.1
    assert (out.scores["p_continue_treatment"] > out.scores["p_continue_control"]).all()
    lifts = {r["metric"]: r for r in out.readout.lifts.iter_rows(named=True)}
    for metric in ("breadth", "depth"):
        row = lifts[metric]
        assert row["delta_ci_low"] > 0 and row["boot_ci_low"] > 0, metric
    assert not out.readout.srm["srm"][0]
    # and a worse treatment reads as a negative lift
    worse = simulated_readout(
        sim,
        ArmReplies(replies.conversation, replies.context, replies.treatment, replies.control),
        cfg,
        AbConfig(start=cfg.start, n_bootstrap=0),
    )
    assert (worse.readout.lifts["delta_ci_high"] < 0).all()


def test_arm_replies_need_both_policies():
    frame = _responses(["a", "b"], ["c"])
    assert ArmReplies.from_responses(frame, "gen-0", "gen-1").control == ["a"]
    with pytest.raises(ValueError, match="run the offline evaluation"):
        ArmReplies.from_responses(frame, "gen-0", "gen-7")


def test_identical_arms_show_no_lift_in_about_95_percent_of_seeds():
    p = np.random.default_rng(0).uniform(0.3, 0.9, 50)
    reps = 400
    sim = simulate_arm_users(p, p, SimulatedAbConfig(n_users=3000, seed=11), reps=reps)
    est = lift_estimates(sim["messages"], sim["treated"])
    for metric in ("breadth", "depth"):
        significant = (est[metric]["p_value"] < 0.05).mean()
        assert 0.02 <= significant <= 0.085, (metric, significant)


def test_simulated_population_matches_its_expected_lifts():
    rng = np.random.default_rng(1)
    p_c, p_t = rng.uniform(0.2, 0.7, 30), rng.uniform(0.3, 0.8, 30)
    sim = simulate_arm_users(p_c, p_t, SimulatedAbConfig(n_users=400_000, seed=2, max_messages=60))
    m, t = sim["messages"], sim["treated"]
    truth = expected_lifts(p_c, p_t, max_messages=60)
    breadth = (m[t] > 0).mean() / (m[~t] > 0).mean() - 1
    depth = m[t][m[t] > 0].mean() / m[~t][m[~t] > 0].mean() - 1
    assert breadth == pytest.approx(truth["breadth"], abs=0.01)
    assert depth == pytest.approx(truth["depth"], abs=0.02)
    assert (m <= 60).all()


def test_bad_probabilities_fail_fast():
    with pytest.raises(ValueError, match="same non-empty"):
        simulate_arm_users(np.array([0.5]), np.array([0.5, 0.4]))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        simulate_arm_users(np.array([1.0]), np.array([0.5]))
    with pytest.raises(ValueError, match="max_messages"):
        SimulatedAbConfig(max_messages=0)


def test_the_replayed_prompt_interval_reflects_how_few_prompts_were_replayed():
    rng = np.random.default_rng(5)
    p_c = rng.uniform(0.3, 0.8, 40)
    # the same replies: every resample reads no lift
    same = prompt_intervals(p_c, p_c, n_resamples=500)
    assert all(lo == hi == pytest.approx(0.0) for lo, hi in same.values())
    # better on every prompt: the interval lies above 0
    better = prompt_intervals(p_c, np.clip(p_c + 0.08, 0, 0.95), n_resamples=500)
    assert all(lo > 0 for lo, _ in better.values())
    # a small average loss made of large gains and losses on 40 prompts: the interval straddles 0, while
    # simulated users by the hundred thousand would call it significant
    mixed = np.clip(p_c + rng.normal(-0.01, 0.12, 40), 0.05, 0.95)
    wide = prompt_intervals(p_c, mixed, n_resamples=500)
    assert all(lo < 0 < hi for lo, hi in wide.values())
    assert prompt_intervals(p_c[:1], p_c[:1]) == {"breadth": (None, None), "depth": (None, None)}
    assert prompt_intervals(p_c, p_c, n_resamples=0)["breadth"] == (None, None)
