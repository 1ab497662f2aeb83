from __future__ import annotations

import json
from datetime import UTC, date, datetime

import numpy as np
import pytest

from quality.outcomes import CheckOutcome, ExpectationOutcome, SuiteResult, json_safe, worst


def test_json_safe_unwraps_and_cuts():
    assert json_safe(np.int64(3)) == 3 and isinstance(json_safe(np.int64(3)), int)
    assert json_safe(np.array([1.5, 2.5])) == [1.5, 2.5]
    assert json_safe(date(2024, 5, 1)) == "2024-05-01"
    assert json_safe(datetime(2024, 5, 1, tzinfo=UTC)).startswith("2024-05-01T00:00")
    assert json_safe(float("nan")) == "nan"
    cut = json_safe("x" * 500, 20)
    assert cut.startswith("x" * 20) and cut.endswith("(500 chars)")
    json.dumps(json_safe({"a": {np.float32(1): [date(2024, 1, 1), None]}}))


def _outcome(success, severity="critical", name="expect_x"):
    return ExpectationOutcome(name=name, column="c", success=success, severity=severity, examples=["v"])


def test_suite_result_levels():
    ok = SuiteResult.from_outcomes("t", [_outcome(True)], rows=3)
    assert ok.success and ok.all_passed and ok.severity is None

    warn = SuiteResult.from_outcomes("t", [_outcome(True), _outcome(False, "warning")], rows=3)
    assert warn.success and not warn.all_passed and warn.severity == "warning"
    assert warn.as_check()["passed"] is False and warn.as_check()["severity"] == "WARN"

    fail = SuiteResult.from_outcomes("t", [_outcome(False, "warning"), _outcome(False)], rows=3)
    assert not fail.success and fail.severity == "critical" and fail.as_check()["severity"] == "ERROR"
    assert fail.statistics["failed_critical"] == 1 and fail.statistics["failed_warning"] == 1
    md = fail.to_metadata()
    json.dumps(md)
    assert len(md["failed_expectations"]) == 2 and "| expect_x |" in md["summary_md"]


def test_check_outcome_levels():
    warn = CheckOutcome("drift", False, "moved", severity="warning")
    assert warn.success and warn.as_check()["severity"] == "WARN"
    fail = CheckOutcome("conservation", False, "lost rows", {"n": np.int64(2)}, examples=[{"id": 1}])
    assert not fail.success and fail.as_check()["severity"] == "ERROR"
    assert fail.to_metadata() == {"n": 2, "detail": "lost rows", "severity": "critical", "examples": [{"id": 1}]}
    with pytest.raises(ValueError):
        CheckOutcome("x", True, "", severity="fatal")


def test_worst():
    assert worst([]) is None
    assert worst(["info", "critical", "warning"]) == "critical"
