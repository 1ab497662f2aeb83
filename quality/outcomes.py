"""Results of data-quality checks, in one shape for every kind of check.

Two kinds of check feed the report and the orchestrator: expectation suites (`SuiteResult`, one
`ExpectationOutcome` per expectation) and plain contract checks (`CheckOutcome`). Both say whether
the table may be consumed (`success`), how bad a failure is (`severity`), and carry JSON-safe
metadata with examples of the offending values, so an orchestrator can publish them as-is.

Severity follows Great Expectations' vocabulary: ``critical`` failures block consumers (training
must never read a table that broke its contract), ``warning`` failures are shown but do not block.
`as_check()` maps this onto the two levels orchestrators use (``ERROR`` / ``WARN``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from quality.markdown import md_text

CRITICAL = "critical"
WARNING = "warning"
INFO = "info"
SEVERITIES = (CRITICAL, WARNING, INFO)
_RANK = {INFO: 0, WARNING: 1, CRITICAL: 2}

MAX_EXAMPLE_CHARS = 160
_NO_CUT = 1 << 30


def check_severity(severity: str) -> str:
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is not one of {SEVERITIES}")
    return severity


def worst(severities: list[str]) -> str | None:
    """The most severe of `severities`, or None for an empty list."""
    return max(severities, key=_RANK.__getitem__) if severities else None


def json_safe(value: Any, max_chars: int = MAX_EXAMPLE_CHARS) -> Any:
    """`value` as plain JSON types: long strings cut (with their length), numpy/pandas scalars unwrapped."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > max_chars:
            return f"{value[:max_chars]}… ({len(value)} chars)"
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_safe(v, max_chars) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, max_chars) for v in value]
    # numpy scalars and arrays, pandas NA / Timestamp: unwrap without importing them here
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "tolist"):
        return json_safe(value.tolist(), max_chars)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return json_safe(value.item(), max_chars)
    return json_safe(str(value), max_chars)


def _dagster_level(severity: str | None) -> str:
    return "ERROR" if severity == CRITICAL else "WARN"


@dataclass
class ExpectationOutcome:
    """One expectation evaluated on one table."""

    name: str
    column: str | None
    success: bool
    severity: str = CRITICAL
    description: str = ""
    observed: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "expectation": self.name,
            "column": self.column or "",
            "severity": self.severity,
            "success": self.success,
            "description": self.description,
        }
        for key in ("observed", "element_count", "unexpected_count", "unexpected_percent", "error"):
            value = getattr(self, key)
            if value is not None:
                d[key] = json_safe(round(value, 4) if isinstance(value, float) else value, _NO_CUT)
        # values were already cut where they were collected; cutting twice would garble the length note
        if self.examples:
            d["examples"] = json_safe(self.examples, _NO_CUT)
        if self.params:
            d["params"] = json_safe(self.params, _NO_CUT)
        return d


@dataclass
class SuiteResult:
    """An expectation suite run on one table.

    `success` is the blocking decision: no critical expectation failed. `all_passed` also counts
    warnings, and `severity` says how bad the worst failure is (None when everything passed).
    """

    table: str
    success: bool
    statistics: dict[str, Any]
    outcomes: list[ExpectationOutcome]

    @classmethod
    def from_outcomes(cls, table: str, outcomes: list[ExpectationOutcome], rows: int) -> SuiteResult:
        failed = [o for o in outcomes if not o.success]
        critical = sum(o.severity == CRITICAL for o in failed)
        stats = {
            "rows": rows,
            "evaluated_expectations": len(outcomes),
            "successful_expectations": len(outcomes) - len(failed),
            "unsuccessful_expectations": len(failed),
            "failed_critical": critical,
            "failed_warning": sum(o.severity == WARNING for o in failed),
            "success_percent": round(100.0 * (len(outcomes) - len(failed)) / len(outcomes), 2) if outcomes else 100.0,
        }
        return cls(table=table, success=critical == 0, statistics=stats, outcomes=outcomes)

    def to_json(self) -> dict[str, Any]:
        """Every field as plain JSON types (values kept whole), for `from_json`: stored results are data,
        never code, so a file anyone can write is only ever parsed."""
        return {
            "table": self.table,
            "success": self.success,
            "statistics": json_safe(self.statistics, _NO_CUT),
            "outcomes": [{k: json_safe(v, _NO_CUT) for k, v in asdict(o).items()} for o in self.outcomes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SuiteResult:
        """The result `to_json` wrote; a ValueError for anything else."""
        try:
            outcomes = [ExpectationOutcome(**o) for o in data["outcomes"]]
            result = cls(table=data["table"], success=data["success"], statistics=data["statistics"], outcomes=outcomes)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a stored suite result: {e}") from e
        if not isinstance(result.table, str) or not isinstance(result.success, bool):
            raise ValueError("not a stored suite result: `table` must be a string and `success` a boolean")
        return result

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def all_passed(self) -> bool:
        return not self.failed

    @property
    def severity(self) -> str | None:
        return worst([o.severity for o in self.failed])

    @property
    def name(self) -> str:
        return f"{self.table}_expectations"

    @property
    def detail(self) -> str:
        s = self.statistics
        if self.all_passed:
            return f"all {s['evaluated_expectations']} expectations passed on {s['rows']} rows"
        failed = ", ".join(f"{o.name}({o.column})" if o.column else o.name for o in self.failed[:6])
        more = f" and {len(self.failed) - 6} more" if len(self.failed) > 6 else ""
        return (
            f"{s['unsuccessful_expectations']} of {s['evaluated_expectations']} expectations failed "
            f"({s['failed_critical']} critical) on {s['rows']} rows: {failed}{more}"
        )

    def to_markdown(self) -> str:
        verdict = "PASS" if self.all_passed else ("FAIL" if not self.success else "WARN")
        head = f"**{_md(self.table)}**: {verdict} — {_md(self.detail)}"
        if self.all_passed:
            return head
        lines = [head, "", "| expectation | column | severity | observed | examples |", "|---|---|---|---|---|"]
        for o in self.failed:
            observed = o.error or (
                f"{o.unexpected_count} unexpected ({o.unexpected_percent:.2f}%)"
                if o.unexpected_count is not None and o.unexpected_percent is not None
                else json_safe(o.observed, 60)
            )
            examples = "; ".join(str(json_safe(e, 40)) for e in o.examples[:3])
            lines.append(
                f"| {_md(o.name)} | {_md(o.column or '')} | {o.severity} | {_md(observed)} | {_md(examples)} |"
            )
        return "\n".join(lines)

    def to_metadata(self) -> dict[str, Any]:
        """Plain JSON-safe values: counts, the failed expectations with examples, a markdown table."""
        return {
            "table": self.table,
            "success": self.success,
            "all_passed": self.all_passed,
            "severity": self.severity or "none",
            **{k: json_safe(v) for k, v in self.statistics.items()},
            "failed_expectations": [o.to_dict() for o in self.failed],
            "summary_md": self.to_markdown(),
        }

    def as_check(self) -> dict[str, Any]:
        """Arguments for an orchestrator check result: passed, severity (ERROR|WARN), description, metadata."""
        return {
            "passed": self.all_passed,
            "severity": _dagster_level(self.severity),
            "description": self.detail,
            "metadata": self.to_metadata(),
        }


@dataclass
class CheckOutcome:
    """A plain contract check: a name, a verdict, a sentence, counters and a few offending rows."""

    name: str
    passed: bool
    detail: str
    metadata: dict[str, Any] = field(default_factory=dict)
    examples: list[Any] = field(default_factory=list)
    severity: str = CRITICAL

    def __post_init__(self) -> None:
        check_severity(self.severity)

    @property
    def success(self) -> bool:
        """Whether consumers may proceed: a failed warning-level check does not block."""
        return self.passed or self.severity != CRITICAL

    @property
    def all_passed(self) -> bool:
        return self.passed

    def to_metadata(self) -> dict[str, Any]:
        md = {k: json_safe(v) for k, v in self.metadata.items() if v is not None}
        md["detail"] = self.detail
        md["severity"] = self.severity
        if self.examples:
            md["examples"] = json_safe(self.examples)
        return md

    def to_markdown(self) -> str:
        verdict = "PASS" if self.passed else ("FAIL" if self.severity == CRITICAL else "WARN")
        return f"**{_md(self.name)}**: {verdict} — {_md(self.detail)}"

    def as_check(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "severity": _dagster_level(self.severity if not self.passed else None),
            "description": self.detail,
            "metadata": self.to_metadata(),
        }


def _md(value: Any) -> str:
    return md_text(value)
