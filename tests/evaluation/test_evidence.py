"""Verdicts below their evidence minimum say so: insufficient, never a pass and never a block."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from evaluation import evidence
from evaluation.ab_config import AbConfig
from evaluation.ab_test import ab_decision
from evaluation.gate_config import GateConfig, GateResult
from evaluation.record import generation_row
from evaluation.release_gates import evidence_rule, release_decision, slice_divergence, win_rate_ceiling
from evaluation.simulated_ab import ArmReplies, SimulatedAbConfig, simulated_readout
from evaluation.user_simulator import UserSimulatorConfig, fit_user_simulator
from pipeline import schema
from tests.evaluation.eval_pool import hashing_embed
from training.rewards.reward_embedding import EmbeddingHeadConfig, EmbeddingRewardModel
from training.rewards.reward_eval import EVAL_METRICS, RewardEvalConfig, pointwise_metrics

# replies of about the same length, so a length-only model cannot tell them apart
WARM = ["Oh nice, tell me more about it!", "That sounds great, how was it?"]
CURT = ["Whatever, I do not care at all.", "Not my thing, go away please."]


def _prompts(n: int, seed: int) -> pl.DataFrame:
    """Served turns where a warm reply is continued far more often than a curt one, at every turn position."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        warm = bool(rng.random() < 0.5)
        question = f"I went hiking on day {i}"
        rows.append(
            {
                "prompt_id": f"s{seed}-p{i}",
                "conversation_id": f"s{seed}-c{i // 4}",
                "cut_turn": i % 4,
                "history": [{"role": "user", "content": question}],
                "system": None,
                "character_id": "robin",
                "user_hash": f"u{i % 40}",
                "source": "external",
                "text": f"user: {question}",
                "last_user": question,
                "served_response": (WARM if warm else CURT)[i % 2],
                "served_by": "gen-0",
                "continued": bool(rng.random() < (0.9 if warm else 0.15)),
                "reply_len": 10,
                "depth_after": 1,
                "thumbs": None,
                "day": date(2026, 1, 1),
            }
        )
    return pl.DataFrame(rows, schema=schema.PROMPTS)


def _validation(train: pl.DataFrame, held_out: pl.DataFrame) -> pl.DataFrame:
    cfg = EmbeddingHeadConfig(kind="pointwise", epochs=30, hidden=8, device="cpu", batch_size=32)
    model = EmbeddingRewardModel.fit_pointwise(train, cfg, hashing_embed)
    rows = pointwise_metrics(model, held_out, RewardEvalConfig(), train_prompts=train)
    return pl.DataFrame(rows, schema=EVAL_METRICS).with_columns(pl.lit("pointwise").alias("model"))


def _summary(win_rate: float, users: int = 30) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "slice": ["eval_internal", "eval_user"],
            "judge": ["pointwise", "pointwise"],
            "n": [120, 120],
            "win_rate": [win_rate, win_rate],
            "ci_low": [win_rate - 0.04] * 2,
            "ci_high": [win_rate + 0.04] * 2,
            "users": [users, users],
        }
    )


def _ok(name: str) -> GateResult:
    return GateResult(True, "ok", "fine", {"gate": name})


def test_a_judge_trained_on_shuffled_labels_gives_insufficient_evidence_never_a_pass_or_a_block():
    train, held_out = _prompts(240, seed=0), _prompts(160, seed=1)
    shuffled = train.with_columns(pl.col("continued").shuffle(seed=3))
    config = GateConfig()
    real = evidence.judge_evidence(_validation(train, held_out), config.judge_margin, config.min_judge_heldout)
    noise = evidence.judge_evidence(_validation(shuffled, held_out), config.judge_margin, config.min_judge_heldout)
    # measured within turn-position strata, the real judge beats the length-only model and the shuffled one does not
    assert real["pointwise"]["metric"] == noise["pointwise"]["metric"] == "auc_within_turn"
    assert real["pointwise"]["sufficient"], real
    assert not noise["pointwise"]["sufficient"] and "does not beat the length-only" in noise["pointwise"]["reason"]
    others = {n: _ok(n) for n in ("steerability_regression", "artifact_drift", "train_eval_disjoint")}
    for wr in (0.9, 0.5):  # a win rate past the ceiling, and one well inside it
        for gate in (win_rate_ceiling, slice_divergence):
            result = gate(_summary(wr), config, noise)
            assert result.severity == "insufficient" and not result.passed, result
            assert result.metadata["evidence"]["judges"]["pointwise"]["value"] == noise["pointwise"]["value"]
            gates = {**others, gate.__name__: result}
            gates["evidence_rule"] = evidence_rule(gates, config)
            decision = release_decision(list(gates.values()))
            assert decision.severity != "error" and decision.metadata["insufficient"] == [gate.__name__]
    # the real judge decides the same win rates: past the ceiling blocks
    assert win_rate_ceiling(_summary(0.9), config, real).severity == "error"
    assert win_rate_ceiling(_summary(0.5), config, real).severity == "ok"


def test_a_slice_with_too_few_users_is_left_out_and_alone_is_insufficient():
    few = _summary(0.9, users=5)
    result = win_rate_ceiling(few, GateConfig())
    assert result.severity == "insufficient" and "5 users (< 20)" in result.detail
    assert result.metadata["evidence"]["slices"]["eval_user"] == {"prompts": 120, "users": 5}
    # one slice with enough users decides the gate; the other is named as left out
    mixed = few.with_columns(pl.Series("users", [5, 40]))
    decided = win_rate_ceiling(mixed, GateConfig())
    assert decided.severity == "error" and "not counted" in decided.detail
    assert slice_divergence(mixed, GateConfig()).severity == "insufficient"


def test_the_evidence_rule_needs_enough_decided_gates():
    short = GateResult(False, "insufficient", "too few users", {"gate": "x"})
    gates = {"a": _ok("a"), "b": short, "c": short}
    assert evidence_rule(gates, GateConfig(min_decided_gates=1)).severity == "ok"
    blocked = evidence_rule(gates, GateConfig(min_decided_gates=2))
    assert blocked.severity == "error" and "only 1 gates" in blocked.detail
    with pytest.raises(ValueError, match="min_slice_users"):
        GateConfig(min_slice_users=0)


def _few_users_turns() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(4):
        for k in range(25):
            warm = rng.random() < 0.5
            rows.append(
                {
                    "user_hash": f"user{u}",
                    "conversation_id": f"c{u}-{k // 5}",
                    "context": "I went hiking this weekend",
                    "reply": (WARM if warm else CURT)[k % 2],
                    "continued": bool(rng.random() < (0.85 if warm else 0.2)),
                }
            )
    return pl.DataFrame(rows)


def test_a_simulator_trained_on_4_users_gives_insufficient_evidence_never_a_ship_or_a_rejection():
    simulator, _ = fit_user_simulator(_few_users_turns(), config=UserSimulatorConfig(refits=4))
    assert simulator.evidence()["users"] == 4 and not simulator.evidence()["sufficient"]
    ids = [f"p{i}" for i in range(30)]
    for treatment in (WARM, CURT):  # a better arm and a worse one
        replies = ArmReplies(
            ids, ["I went hiking"] * 30, [CURT[i % 2] for i in range(30)], [treatment[i % 2] for i in range(30)]
        )
        out = simulated_readout(simulator, replies, SimulatedAbConfig(n_users=4000), AbConfig(n_bootstrap=200))
        assert out.evidence["users"] == 4 and out.evidence["turns"] == 100 and out.evidence["refits"] == 4
        verdict, reason = ab_decision(out.readout.lifts, out.readout.srm, insufficient=out.evidence["reason"])
        assert verdict == "insufficient" and "4 users (< 50)" in reason
        # the interval carries the simulator's own error: never narrower than the simulated users' alone
        lifts = out.readout.lifts
        assert (
            (lifts["total_ci_high"] - lifts["total_ci_low"]) >= (lifts["delta_ci_high"] - lifts["delta_ci_low"])
        ).all()
    # recorded, such a generation is released on its gates and named insufficient: the A/B test did not reject it
    gates = pl.DataFrame({"gate": ["artifact_drift"], "severity": ["ok"], "detail": ["fine"]})
    ab = {"verdict": "insufficient", "reason": reason, "source": "users", "lifts": {}}
    plan = {"generation": "gen-1", "number": 1, "parent": "gen-0", "created_at": "t", "days": ["2026-01-01"]}
    row = generation_row(plan, "t", gates, {"ab": ab}, {}, {})
    assert row["released"] and row["ab_verdict"] == "insufficient" and row["insufficient"] == ["ab_readout"]


def test_a_judge_without_training_data_is_insufficient_with_its_count():
    from training.rewards.judge_minimums import JudgeMinimums, not_trained_row, pairwise_shortfall

    row = not_trained_row(pairwise_shortfall(2, JudgeMinimums()))
    metrics = pl.DataFrame([row], schema=EVAL_METRICS).with_columns(pl.lit("pairwise").alias("model"))
    judges = evidence.judge_evidence(metrics, margin=0.02, min_heldout=50)
    assert judges["pairwise"] == {
        "sufficient": False,
        "trained": False,
        "n": 2,
        "reason": "not trained: 2 preference pairs (minimum 10)",
    }
    assert "judge pairwise: not trained: 2 preference pairs" in evidence.describe({"judges": judges})
