"""The generation record: the metrics document, blocked generations and what is refused."""

import json

import polars as pl
import pytest

from evaluation.generations_table import GENERATIONS
from evaluation.record import collect_metrics, generation_row

PLAN = {"generation": "gen-2", "number": 2, "parent": "gen-1", "created_at": "t0", "days": ["2026-01-13", "2026-01-14"]}


def _gates(*severities: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "gate": [f"g{i}" for i in range(len(severities))],
            "severity": list(severities),
            "detail": ["d"] * len(severities),
        }
    )


def _ab(verdict: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "metric": ["breadth"],
            "lift": [0.05],
            "source": ["simulate"],
            "simulated": [True],
            "verdict": [verdict],
            "reason": ["r"],
        }
    )


def test_metrics_document_leaves_out_what_is_missing():
    metrics = collect_metrics({"ab_lifts": _ab("ship")})
    assert set(metrics) == {"version", "ab"}
    assert metrics["ab"]["verdict"] == "ship" and metrics["ab"]["lifts"]["breadth"] == {"lift": 0.05}


def test_generation_row_records_a_passed_generation():
    row = generation_row(PLAN, "t1", _gates("ok", "warn"), collect_metrics({"ab_lifts": _ab("ship")}), {}, {})
    frame = pl.DataFrame([row], schema=GENERATIONS)
    assert frame["gate"][0] == "passed_with_warnings" and frame["ab_verdict"][0] == "ship"
    assert str(frame["window_end"][0]) == "2026-01-14"


def test_generation_row_records_a_blocked_generation_without_its_ab_readout():
    row = generation_row(PLAN, "t1", _gates("ok", "error"), collect_metrics({"ab_lifts": _ab("ship")}), {}, {})
    frame = pl.DataFrame([row], schema=GENERATIONS)
    assert (frame["released"][0], frame["blocked_by"][0].to_list(), frame["gate"][0]) == (False, ["g1"], "failed")
    assert frame["ab_verdict"][0] is None and frame["sim_breadth_lift"][0] is None
    assert "ab" not in json.loads(frame["metrics"][0])


@pytest.mark.parametrize(
    ("gates", "lifts", "message"),
    [
        (_gates(), _ab("ship"), "no release-gate results"),
        (_gates("ok"), None, "no A/B readout"),
        (_gates("ok"), _ab("invalid"), "is invalid"),
    ],
)
def test_generation_row_refuses_what_must_not_be_recorded(gates, lifts, message):
    metrics = collect_metrics({} if lifts is None else {"ab_lifts": lifts})
    with pytest.raises(ValueError, match=message):
        generation_row(PLAN, "t1", gates, metrics, {}, {})


def test_fluency_reaches_the_metrics_the_table_and_the_report():
    from evaluation.fluency import SUMMARY_SCHEMA
    from evaluation.generation_report import build_markdown
    from evaluation.generations_table import fluency_of, metrics_long, parse_generations

    summary = pl.DataFrame(
        [
            {"role": "new", "policy": "gen-2", "mean_slor": 1.9, "n": 40},
            {"role": "parent", "policy": "gen-1", "mean_slor": 1.5, "n": 40},
            {"role": "difference", "mean_slor": 0.4, "n": 40, "ci_low": 0.2, "ci_high": 0.6, "unit": "user"},
        ],
        schema=SUMMARY_SCHEMA,
    )
    metrics = collect_metrics({"eval_fluency": summary})
    assert (fluency_of(metrics, "new"), fluency_of(metrics, "parent")) == (1.9, 1.5)
    assert metrics["fluency"]["difference"]["ci_low"] == 0.2
    row = generation_row(PLAN, "t1", _gates("ok"), {**metrics, **collect_metrics({"ab_lifts": _ab("ship")})}, {}, {})
    rows = parse_generations(pl.DataFrame([row], schema=GENERATIONS))
    assert "| 1.900 / 1.500 |" in build_markdown(rows)
    long = metrics_long(rows).filter(pl.col("group") == "fluency")
    assert dict(zip(long["series"], long["value"])) == {"mean_slor/new": 1.9, "mean_slor/parent": 1.5}
    # not measured (an older record, or fluency switched off): empty, not zero
    assert fluency_of(collect_metrics({}), "new") is None


def test_a_judge_the_traffic_could_not_train_is_named_insufficient_with_its_count():
    from training.rewards.judge_minimums import JudgeMinimums, not_trained_row, pairwise_shortfall
    from training.rewards.reward_eval import EVAL_METRICS

    short = pairwise_shortfall(2, JudgeMinimums())
    rm = pl.DataFrame([not_trained_row(short)], schema=EVAL_METRICS).with_columns(pl.lit("pairwise").alias("model"))
    metrics = collect_metrics({"ab_lifts": _ab("inconclusive"), "reward_model_metrics": rm})
    assert metrics["judges_not_trained"] == {
        "pairwise": {"count": 2, "reason": "not trained: 2 preference pairs (minimum 10)"}
    }
    row = generation_row(PLAN, "t1", _gates("ok", "insufficient"), metrics, {}, {})
    frame = pl.DataFrame([row], schema=GENERATIONS)
    assert frame["released"][0]
    assert frame["insufficient"][0].to_list() == ["g1", "pairwise judge not trained: 2 preference pairs (minimum 10)"]


def test_the_steerability_gate_keeps_its_per_rule_intervals_in_the_record():
    from evaluation.record import gate_verdicts

    rules = [{"rule": "case", "parent": 0.1, "new": 0.6, "rise": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n_prompts": 40}]
    gates = pl.DataFrame(
        {
            "gate": ["steerability_regression", "artifact_drift"],
            "severity": ["error", "ok"],
            "detail": ["rules forgotten: case +0.500", "ok"],
            "metadata": [json.dumps({"rules": rules}), json.dumps({})],
        }
    )
    verdicts = {v["gate"]: v for v in gate_verdicts(gates)}
    assert verdicts["steerability_regression"]["rules"] == rules and "rules" not in verdicts["artifact_drift"]


def _steer_gate(ci_low: float, ci_high: float) -> pl.DataFrame:
    meta = {"following_rate": 0.30, "previous_following_rate": 0.20, "ci_low": ci_low, "ci_high": ci_high}
    return pl.DataFrame(
        {
            "gate": ["steerability_regression", "artifact_drift"],
            "severity": ["ok", "ok"],
            "detail": ["d", "d"],
            "metadata": [json.dumps(meta), json.dumps({})],
        }
    )


def test_a_generation_is_built_upon_only_when_the_evidence_decides_it_improves():
    better = generation_row(
        PLAN, "t1", _steer_gate(0.04, 0.16), collect_metrics({"ab_lifts": _ab("inconclusive")}), {}, {}
    )
    improvement = json.loads(better["metrics"])["improvement"]
    assert improvement["improved"] and improvement["by"] == ["held-out following"]
    assert improvement["following"]["difference"] == pytest.approx(0.10)
    flat = generation_row(
        PLAN, "t1", _steer_gate(-0.05, 0.25), collect_metrics({"ab_lifts": _ab("inconclusive")}), {}, {}
    )
    improvement = json.loads(flat["metrics"])["improvement"]
    assert not improvement["improved"] and flat["released"]
    assert (
        improvement["reason"]
        == "not shown better than its parent: held-out following +0.100 [-0.050, +0.250], A/B inconclusive"
    )
    shipped = generation_row(PLAN, "t1", _steer_gate(-0.05, 0.25), collect_metrics({"ab_lifts": _ab("ship")}), {}, {})
    assert json.loads(shipped["metrics"])["improvement"]["by"] == ["A/B readout"]
