"""The daily report's inputs turned into what its templates draw: check rows with their status, drift views,
the top shares with bar widths, and the overall verdict. A section whose stage has not run says so instead
of disappearing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from quality import plots
from quality.drift import MAJOR, MODERATE, DriftConfig, PSIResult
from quality.outcomes import CRITICAL, CheckOutcome, SuiteResult
from quality.report_inputs import ReportInputs

DUP_KINDS = ("exact", "near", "semantic")
TOP_CLUSTERS = 15


def check_status(check: SuiteResult | CheckOutcome) -> str:
    """pass, warn (a non-blocking failure) or fail (a critical failure: consumers must not proceed)."""
    if check.all_passed:
        return "pass"
    if isinstance(check, SuiteResult):
        return "fail" if not check.success else "warn"
    return "fail" if check.severity == CRITICAL else "warn"


def _check_rows(checks: Sequence[SuiteResult | CheckOutcome], links: Mapping[str, str]) -> list[dict[str, Any]]:
    rows = []
    for c in checks:
        status = check_status(c)
        row = {
            "status": status,
            "name": c.name,
            "table": c.table if isinstance(c, SuiteResult) else "",
            "detail": c.detail,
            "link": links.get(c.table) if isinstance(c, SuiteResult) else None,
            "failed": [],
            "examples": [],
        }
        if isinstance(c, SuiteResult):
            row["failed"] = [o.to_dict() for o in c.failed]
        else:
            row["examples"] = c.to_metadata().get("examples", [])
        rows.append(row)
    order = {"fail": 0, "warn": 1, "pass": 2}
    return sorted(rows, key=lambda r: order[r["status"]])


def _overall(check_rows: list[dict[str, Any]], drifts: list[PSIResult]) -> str:
    statuses = {r["status"] for r in check_rows}
    if "fail" in statuses:
        return "fail"
    if "warn" in statuses or any(d.status == MAJOR for d in drifts):
        return "warn"
    return "pass" if check_rows else "unknown"


def _top_shares(shares: Mapping[str, float], previous: Mapping[str, float] | None) -> list[dict[str, Any]]:
    prev = previous or {}
    items = sorted(shares.items(), key=lambda kv: -kv[1])
    rows: list[dict[str, Any]] = [{"label": k, "share": v, "previous": prev.get(k)} for k, v in items[:TOP_CLUSTERS]]
    if len(items) > TOP_CLUSTERS:
        rest = items[TOP_CLUSTERS:]
        rest_keys = {k for k, _ in rest}
        rows.append(
            {
                "label": f"other ({len(rest)} clusters)",
                "share": sum(v for _, v in rest),
                "previous": sum(v for k, v in prev.items() if k in rest_keys) if prev else None,
            }
        )
    return rows


def _drift_view(result: PSIResult | None, title: str, draw: bool, *, ordered: bool) -> dict[str, Any] | None:
    """Bins of an ordered variable are listed in order; categories by how much each moved the PSI."""
    if result is None:
        return None
    plot = None
    if result.labels and draw:
        plot = plots.compare_shares(
            result.labels, result.reference_shares, result.current_shares, title=title, rotate=len(result.labels) > 6
        )
    bins = [
        {"label": lab, "previous": r, "today": c, "contribution": t}
        for lab, r, c, t in zip(result.labels, result.reference_shares, result.current_shares, result.contributions)
    ]
    if not ordered:
        bins.sort(key=lambda b: -b["contribution"])
    return {
        "result": result,
        "plot": plot,
        "flag": result.status in (MODERATE, MAJOR),
        "bins": bins[:12],
        "ordered": ordered,
    }


def _with_bar_widths(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    # inline bars are scaled to the largest value shown, so small rates stay readable
    top = max((r[key] for r in rows if r.get(key) is not None), default=0.0) or 1.0
    return [{**r, "width": 100.0 * r[key] / top if r.get(key) is not None else 0.0} for r in rows]


def report_context(inputs: ReportInputs, links: Mapping[str, str], *, draw: bool = True) -> dict[str, Any]:
    def chart(fn, *args, **kwargs):
        return fn(*args, **kwargs) if draw else None

    checks = _check_rows(inputs.checks or [], links)
    length_drift, cluster_drift = inputs.resolved_length_drift(), inputs.resolved_cluster_drift()
    drifts = [d for d in (length_drift, cluster_drift) if d is not None]
    stages = list(inputs.stages or [])
    quarantined = sum(inputs.quarantine_reasons.values()) if inputs.quarantine_reasons is not None else None
    dup = {k: float(v) for k, v in (inputs.dup_rates or {}).items() if v is not None}
    ctx: dict[str, Any] = {
        "title": inputs.title,
        "day": inputs.day.isoformat() if isinstance(inputs.day, date) else str(inputs.day),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "overall": _overall(checks, drifts),
        "checks": checks,
        "check_counts": {s: sum(r["status"] == s for r in checks) for s in ("pass", "warn", "fail")},
        "stages": [
            {
                "stage": s.stage,
                "rows_in": s.rows_in,
                "rows_out": s.rows_out,
                "dropped": s.rows_dropped,
                "drop_rate": (s.rows_dropped / s.rows_in) if s.rows_in and s.rows_dropped is not None else None,
                "reasons": sorted(s.dropped_by_reason.items(), key=lambda kv: -kv[1])[:4],
            }
            for s in stages
        ],
        "funnel_plot": chart(plots.funnel, [(s.stage, s.rows_in, s.rows_out) for s in stages]) if stages else None,
        "records_read": inputs.records_read,
        "quarantined": quarantined,
        "quarantine_rate": (quarantined / inputs.records_read)
        if quarantined is not None and inputs.records_read
        else None,
        "quarantine": sorted((inputs.quarantine_reasons or {}).items(), key=lambda kv: -kv[1]),
        "quarantine_reported": inputs.quarantine_reasons is not None,
        "unread_files": [{"file": f, "reason": r, "detail": d} for f, r, d in inputs.unread_files or []],
        "quarantine_plot": chart(
            plots.bar_counts, inputs.quarantine_reasons, title="Quarantined records by reason", color=plots.AMBER
        )
        if inputs.quarantine_reasons
        else None,
        "pii": sorted((inputs.pii_counts or {}).items(), key=lambda kv: -kv[1]),
        "pii_reported": inputs.pii_counts is not None,
        "pii_plot": chart(plots.bar_counts, inputs.pii_counts, title="PII replaced, by type")
        if inputs.pii_counts
        else None,
        "dups": _with_bar_widths(
            [{"kind": k, "rate": dup.get(k)} for k in DUP_KINDS]
            + [{"kind": k, "rate": v} for k, v in dup.items() if k not in DUP_KINDS],
            "rate",
        ),
        "dups_reported": inputs.dup_rates is not None,
        "dup_plot": chart(plots.bar_counts, dup, title="Duplicate rate by method", percent=True, keep_order=True)
        if dup
        else None,
        "clusters": _with_bar_widths(_top_shares(inputs.cluster_shares, inputs.previous_cluster_shares), "share")
        if inputs.cluster_shares
        else [],
        "n_clusters": len(inputs.cluster_shares or {}),
        "has_previous_clusters": bool(inputs.previous_cluster_shares),
        "length_drift": _drift_view(length_drift, "Text length: share of rows per length bin", draw, ordered=True),
        "cluster_drift": _drift_view(cluster_drift, "Cluster shares: previous day vs today", draw, ordered=False),
        "drift_config": inputs.drift_config or DriftConfig(),
    }
    first_in = next((s.rows_in for s in stages if s.rows_in is not None), None)
    last_out = next((s.rows_out for s in reversed(stages) if s.rows_out is not None), None)
    ctx["kpis"] = [
        ("Checks passing", f"{ctx['check_counts']['pass']} / {len(checks)}" if checks else "—"),
        ("Rows in", f"{first_in:,}" if first_in is not None else "—"),
        ("Rows out", f"{last_out:,}" if last_out is not None else "—"),
        ("Quarantine rate", f"{100 * ctx['quarantine_rate']:.2f}%" if ctx["quarantine_rate"] is not None else "—"),
        ("Length PSI", f"{length_drift.psi:.3f}" if length_drift and np.isfinite(length_drift.psi) else "—"),
        ("Cluster PSI", f"{cluster_drift.psi:.3f}" if cluster_drift and np.isfinite(cluster_drift.psi) else "—"),
    ]
    sections = {
        "pipeline stages": bool(stages),
        "quarantine": inputs.quarantine_reasons is not None,
        "PII scrubbing": inputs.pii_counts is not None,
        "deduplication": inputs.dup_rates is not None,
        "clusters": bool(inputs.cluster_shares),
        "length drift": length_drift is not None,
        "cluster drift": cluster_drift is not None,
        "checks": bool(checks),
    }
    ctx["missing"] = [name for name, present in sections.items() if not present]
    return ctx
