"""The daily data-quality report: one self-contained HTML page, a markdown summary, one page per suite.

The page renders offline: CSS is inline, charts are PNGs embedded as data URIs, fonts are the
reader's system fonts. Every input is optional; a section whose stage has not run says so instead
of disappearing, so a reader can tell "nothing wrong" from "nothing measured" (`quality.report_view`
turns the `quality.report_inputs` into what the templates draw). Templates live in
`quality/templates` (package data) and are rendered with jinja2, autoescaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from pipeline.lake import atomic_write_text
from quality.markdown import md_text
from quality.outcomes import CRITICAL, SuiteResult
from quality.report_inputs import ReportInputs
from quality.report_view import check_status, report_context

__all__ = [
    "ReportFiles",
    "build_html",
    "build_markdown",
    "render_suite_html",
    "write_report",
    "write_suite_page",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and float(v).is_integer()):
        return f"{int(v):,}"
    return f"{float(v):,.4g}"


def template_environment(*folders: Path) -> jinja2.Environment:
    """The reports' jinja2 settings over templates in `folders` (this report's last, for the stylesheet and
    macros a page shares): HTML autoescaped, an undefined name an error."""
    return jinja2.Environment(
        # located from this file, not by package name: a `tests/quality` folder on sys.path can
        # shadow the package name as a namespace package, and PackageLoader would look there
        loader=jinja2.FileSystemLoader([*folders, TEMPLATES]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _env() -> jinja2.Environment:
    env = template_environment()
    env.filters["num"] = _num
    env.filters["pct"] = lambda v, d=2: "—" if v is None else f"{100 * float(v):.{d}f}%"
    # the markdown summary is not autoescaped: every value from the data goes through `md`
    env.filters["md"] = md_text
    return env


_ENV: jinja2.Environment | None = None


def env() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = _env()
    return _ENV


def build_html(inputs: ReportInputs, *, suite_links: Mapping[str, str] | None = None) -> str:
    """The report page as one self-contained HTML string."""
    return env().get_template("report.html.j2").render(**report_context(inputs, suite_links or {}))


def build_markdown(inputs: ReportInputs) -> str:
    """A short markdown summary (status, key figures, failing checks, missing sections) for the orchestrator UI."""
    ctx = report_context(inputs, {}, draw=False)
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
