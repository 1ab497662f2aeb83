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
