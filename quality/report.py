"""The daily data-quality report: one self-contained HTML page, a markdown summary, one page per suite.

The page renders offline: CSS is inline, charts are PNGs embedded as data URIs, fonts are the
reader's system fonts. Every input is optional; a section whose stage has not run says so instead
of disappearing, so a reader can tell "nothing wrong" from "nothing measured". Templates live in
`quality/templates` (package data) and are rendered with jinja2, autoescaped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from pipeline.lake import atomic_write_text
from quality import plots
from quality.drift import MAJOR, MODERATE, DriftConfig, PSIResult, psi_categorical, psi_numeric
from quality.outcomes import CRITICAL, CheckOutcome, SuiteResult

__all__ = [
    "ReportFiles",
    "ReportInputs",
    "StageCount",
    "build_html",
    "build_markdown",
    "render_suite_html",
    "screenshot",
    "write_report",
    "write_suite_page",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
DUP_KINDS = ("exact", "near", "semantic")
TOP_CLUSTERS = 15


@dataclass
class StageCount:
    """Rows into and out of one pipeline stage, and why the difference was dropped."""

    stage: str
    rows_in: int | None = None
    rows_out: int | None = None
    dropped_by_reason: Mapping[str, int] = field(default_factory=dict)

    @property
    def rows_dropped(self) -> int | None:
        if self.dropped_by_reason:
            return int(sum(self.dropped_by_reason.values()))
        if self.rows_in is not None and self.rows_out is not None:
            return self.rows_in - self.rows_out
        return None


@dataclass
class ReportInputs:
    """Everything the daily report shows. Leave a field None when its stage has not run."""

    day: str | date
    stages: Sequence[StageCount] | None = None
    records_read: int | None = None
    quarantine_reasons: Mapping[str, int] | None = None
    # files the source refused or could not read to their end: (file, reason code, detail)
    unread_files: Sequence[tuple[str, str, str]] | None = None
    pii_counts: Mapping[str, int] | None = None
    dup_rates: Mapping[str, float] | None = None
    cluster_shares: Mapping[str, float] | None = None
    previous_cluster_shares: Mapping[str, float] | None = None
    text_lengths: Sequence[float] | np.ndarray | None = None
    previous_text_lengths: Sequence[float] | np.ndarray | None = None
    length_drift: PSIResult | None = None
    cluster_drift: PSIResult | None = None
    checks: Sequence[SuiteResult | CheckOutcome] | None = None
    title: str = "CharacterFlywheel · daily data quality"
    drift_config: DriftConfig | None = None

    def __post_init__(self) -> None:
        for kind, rate in (self.dup_rates or {}).items():
            if rate is not None and not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"dup_rates[{kind!r}]={rate}: a dup rate is a fraction in [0, 1]")
        for name in ("quarantine_reasons", "pii_counts"):
            for key, n in (getattr(self, name) or {}).items():
                if n < 0:
                    raise ValueError(f"{name}[{key!r}]={n}: counts are >= 0")

    def resolved_length_drift(self) -> PSIResult | None:
        if self.length_drift is not None:
            return self.length_drift
        if self.text_lengths is not None and self.previous_text_lengths is not None:
            return psi_numeric(
                self.previous_text_lengths, self.text_lengths, name="text_length", config=self.drift_config
            )
        return None

    def resolved_cluster_drift(self) -> PSIResult | None:
        if self.cluster_drift is not None:
            return self.cluster_drift
        if self.cluster_shares and self.previous_cluster_shares:
            return psi_categorical(
                self.previous_cluster_shares, self.cluster_shares, name="cluster_shares", config=self.drift_config
            )
        return None


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and float(v).is_integer()):
        return f"{int(v):,}"
    return f"{float(v):,.4g}"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        # located from this file, not by package name: a `tests/quality` folder on sys.path can
        # shadow the package name as a namespace package, and PackageLoader would look there
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = _num
    env.filters["pct"] = lambda v, d=2: "—" if v is None else f"{100 * float(v):.{d}f}%"
    return env


_ENV: jinja2.Environment | None = None


def env() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = _env()
    return _ENV


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


def _context(inputs: ReportInputs, links: Mapping[str, str], *, draw: bool = True) -> dict[str, Any]:
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


def build_html(inputs: ReportInputs, *, suite_links: Mapping[str, str] | None = None) -> str:
    """The report page as one self-contained HTML string."""
    return env().get_template("report.html.j2").render(**_context(inputs, suite_links or {}))


def build_markdown(inputs: ReportInputs) -> str:
    """A short markdown summary (status, key figures, failing checks, missing sections) for the orchestrator UI."""
    ctx = _context(inputs, {}, draw=False)
    return env().get_template("summary.md.j2").render(**ctx).strip() + "\n"


def render_suite_html(result: SuiteResult, *, day: str | date | None = None) -> str:
    """One suite's page: status, statistics and every expectation with its observed values and examples."""
    order = {"fail": 0, "warn": 1, "pass": 2}
    rows = []
    for o in result.outcomes:
        status = "pass" if o.success else ("fail" if o.severity == CRITICAL else "warn")
        rows.append({"status": status, **o.to_dict()})
    rows.sort(key=lambda r: order[r["status"]])
    return (
        env()
        .get_template("suite.html.j2")
        .render(
            result=result,
            status=check_status(result),
            rows=rows,
            day=day.isoformat() if isinstance(day, date) else (day or ""),
            generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
    )


def write_suite_page(result: SuiteResult, folder: Path | str, *, day: str | date | None = None) -> Path:
    """Write `<folder>/<table>.html` atomically; returns its path."""
    return atomic_write_text(Path(folder) / f"{result.table}.html", render_suite_html(result, day=day))


@dataclass
class ReportFiles:
    index: Path
    summary: Path
    suite_pages: dict[str, Path]
    markdown: str


def write_report(inputs: ReportInputs, folder: Path | str) -> ReportFiles:
    """Write index.html, summary.md and one `<table>.html` per suite result into `folder` (atomically, file by file)."""
    folder = Path(folder)
    pages = {
        c.table: write_suite_page(c, folder, day=inputs.day)
        for c in (inputs.checks or [])
        if isinstance(c, SuiteResult)
    }
    index = atomic_write_text(
        folder / "index.html", build_html(inputs, suite_links={t: p.name for t, p in pages.items()})
    )
    markdown = build_markdown(inputs)
    summary = atomic_write_text(folder / "summary.md", markdown)
    return ReportFiles(index=index, summary=summary, suite_pages=pages, markdown=markdown)


def find_chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(
    html_path: Path | str, png_path: Path | str, *, width: int = 1280, height: int = 2000, timeout_s: float = 120.0
) -> Path | None:
    """Render `html_path` to `png_path` with headless Chromium; None when no Chromium is installed.

    Network features are switched off and a throwaway profile is used, so the render is offline
    and leaves nothing behind. Raises RuntimeError when Chromium runs but produces no image.
    """
    exe = find_chromium()
    if exe is None:
        return None
    html_path, png_path = Path(html_path).resolve(), Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flywheel-chromium-") as profile:
        tmp_png = Path(profile) / "shot.png"
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}/user",
            f"--screenshot={tmp_png}",
            f"--window-size={width},{height}",
            html_path.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if not tmp_png.exists():
            raise RuntimeError(f"chromium produced no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}")
        tmp_out = png_path.with_name(f".{png_path.name}.tmp")
        shutil.copyfile(tmp_png, tmp_out)
        os.replace(tmp_out, png_path)
    return png_path
