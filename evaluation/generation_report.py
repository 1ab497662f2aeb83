"""The generations report: every recorded generation of the flywheel on one offline HTML page.

Input is the `generations` table (`evaluation.generations_table`: its schema and the JSON columns it
carries); a missing value shows as "—" rather than breaking the page, so generations recorded by older code
still render. The page renders offline: CSS is the quality report's stylesheet inlined, charts are PNGs
embedded as data URIs (`evaluation.generation_charts`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from evaluation import evidence
from evaluation.generation_charts import build_plots
from evaluation.generation_report_config import GenerationReportConfig
from evaluation.generations_table import (
    as_dict,
    as_number,
    fluency_of,
    following_on_test_cards,
    ifeval_difference,
    ifeval_of,
    parse_generations,
)
from pipeline.lake import atomic_write_text
from quality.report import template_environment


@dataclass
class GenerationReportFiles:
    index: Path
    markdown: str
    generations: int
    plots: list[str]
    # chart name -> PNG data URI (the run chart), for places that show images inline
    charts: dict[str, str] = field(default_factory=dict)


def _fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    f = as_number(v)
    if f is None:
        return "—"
    return f"{100 * f:+.1f}%" if pct else f"{f:.{digits}f}"


def _win_rate(m: Mapping[str, Any], slice_name: str, judge: str) -> dict[str, Any] | None:
    for w in m.get("win_rates") or []:
        if isinstance(w, dict) and w.get("slice") == slice_name and w.get("judge") == judge:
            return w
    return None


def _wr_text(w: Mapping[str, Any] | None) -> str:
    if not w or as_number(w.get("win_rate")) is None:
        return "—"
    ci = f" [{_fmt(w.get('ci_low'))}, {_fmt(w.get('ci_high'))}]" if as_number(w.get("ci_low")) is not None else ""
    return f"{_fmt(w.get('win_rate'))}{ci}"


def _lift_text(lift: Mapping[str, Any] | None) -> str:
    if not lift or as_number(lift.get("lift")) is None:
        return "—"
    return (
        f"{_fmt(lift.get('lift'), pct=True)} [{_fmt(lift.get('delta_ci_low'), pct=True)}, "
        f"{_fmt(lift.get('delta_ci_high'), pct=True)}]"
    )


def _gate_row(g: Mapping[str, Any]) -> dict[str, Any]:
    severity = g.get("severity") or "unknown"
    outcome = g.get("outcome") or {"ok": "pass", "warn": "pass", "error": "fail"}.get(severity, "insufficient")
    return {
        "gate": g.get("gate") or "—",
        "severity": severity,
        "outcome": outcome,
        "detail": g.get("detail") or "",
        "evidence_text": evidence.describe(g.get("evidence")),
        "rules": [_rule_row(x) for x in g.get("rules") or [] if isinstance(x, dict)],
    }


def _rule_row(r: Mapping[str, Any]) -> dict[str, str]:
    """A rule's violation rate, parent and new, and the rise with its paired interval, as display text."""
    lo, hi, rise = as_number(r.get("ci_low")), as_number(r.get("ci_high")), as_number(r.get("rise"))
    return {
        "rule": str(r.get("rule") or "—"),
        "parent": _fmt(r.get("parent")),
        "new": _fmt(r.get("new")),
        "rise": f"{rise:+.3f}" if rise is not None else "—",
        "interval": f"[{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "—",
        "prompts": str(r.get("n_prompts") if r.get("n_prompts") is not None else "—"),
        "forgotten": lo is not None and lo > 0,
    }


def summary_rows(rows: Sequence[Mapping[str, Any]], config: GenerationReportConfig) -> list[dict[str, Any]]:
    """One display row per generation: what the overview table and the markdown show."""
    out = []
    for r in rows:
        m, inputs = as_dict(r.get("metrics")), as_dict(r.get("inputs"))
        ab = as_dict(m.get("ab"))
        lifts = as_dict(ab.get("lifts"))
        steer = as_dict(m.get("steerability"))
        datasets = as_dict(inputs.get("datasets"))
        out.append(
            {
                "generation": r["generation"],
                "parent": r.get("parent") or "—",
                "created_at": r.get("created_at") or "—",
                "window": f"{r.get('window_start') or '—'} – {r.get('window_end') or '—'}",
                "gate": r.get("gate") or "unknown",
                "verdict": r.get("ab_verdict") or "—",
                "simulated": bool(ab.get("simulated")) or r.get("ab_source") == "simulate",
                "wr_user": _wr_text(_win_rate(m, "eval_user", "pointwise")),
                "wr_internal": _wr_text(_win_rate(m, "eval_internal", "pointwise")),
                "wr_user_evidence": evidence.describe_win_rate(_win_rate(m, "eval_user", "pointwise")),
                "wr_internal_evidence": evidence.describe_win_rate(_win_rate(m, "eval_internal", "pointwise")),
                "insufficient": list(r.get("insufficient") or []),
                # later generations start from it only when it was decided better than its parent
                "built_upon": _built_upon_text(r, as_dict(m.get("improvement"))),
                "ab_reason": ab.get("reason") or "—",
                "ab_evidence": evidence.describe_readout(as_dict(ab.get("evidence"))),
                "samples": [x for x in m.get("samples") or [] if isinstance(x, dict)],
                "steer_new": _fmt(as_dict(steer.get("new")).get("following_rate")),
                "steer_parent": _fmt(as_dict(steer.get("parent")).get("following_rate")),
                "steer_test_new": _fmt(following_on_test_cards(m, "new")),
                "steer_test_parent": _fmt(following_on_test_cards(m, "parent")),
                "ifeval": _ifeval_text(m),
                "fluency_new": _fmt(fluency_of(m, "new")),
                "fluency_parent": _fmt(fluency_of(m, "parent")),
                "breadth": _lift_text(as_dict(lifts.get("breadth"))),
                "depth": _lift_text(as_dict(lifts.get("depth"))),
                "datasets": {k: str(v or "—")[: config.hash_chars] for k, v in datasets.items()},
                "gates": [_gate_row(g) for g in r.get("gate_detail") or [] if isinstance(g, dict)],
                "inputs": json.dumps(inputs, indent=2, sort_keys=True, default=str),
                "checkpoints": as_dict(r.get("checkpoints")),
                "reward_models": {k: as_dict(v) for k, v in as_dict(m.get("reward_models")).items()},
            }
        )
    return out


def _ifeval_text(m: Mapping[str, Any]) -> str:
    """Instruction-strict accuracy on the held-out IFEval prompts, new / parent, and the paired difference with its
    interval; '—' when IFEval was not answered."""
    new, parent = ifeval_of(m, "new"), ifeval_of(m, "parent")
    if new is None or parent is None:
        return "—"
    d = ifeval_difference(m)
    diff, lo, hi = (as_number(d.get(k)) for k in ("difference", "ci_low", "ci_high"))
    text = f"{_fmt(new)} / {_fmt(parent)}"
    if diff is not None and lo is not None and hi is not None:
        text += f" ({diff:+.3f} [{lo:+.3f}, {hi:+.3f}])"
    return text


def _built_upon_text(r: Mapping[str, Any], improvement: Mapping[str, Any]) -> str:
    if r.get("released") is False:
        return "no (blocked)"
    if str(r.get("ab_verdict") or "").startswith("no-ship"):
        return "no (A/B no-ship)"
    if not improvement:
        return "yes"  # recorded before the rule: released was enough
    return ("yes: " if improvement.get("improved") else "no: ") + str(improvement.get("reason") or "")


def _status(gate: str) -> str:
    return {"passed": "pass", "passed_with_warnings": "warn", "failed": "fail"}.get(gate, "unknown")


def _verdict_status(verdict: str) -> str:
    statuses = {"ship": "pass", "no-ship": "fail", "inconclusive": "warn", "invalid": "fail"}
    return statuses.get(verdict, "insufficient" if verdict == "insufficient" else "unknown")


def build_markdown(rows: Sequence[Mapping[str, Any]], config: GenerationReportConfig | None = None) -> str:
    config = config or GenerationReportConfig()
    if not rows:
        return "_no generation recorded yet_"
    table = summary_rows(rows, config)
    lines = [
        f"**{len(table)} generation{'s' if len(table) != 1 else ''}**, latest `{table[-1]['generation']}`.",
        "",
        "| generation | parent | gate | A/B | built upon | win rate user (pointwise) | win rate internal | "
        "steerability new / parent | test cards new / parent | IFEval held-out new / parent | fluency new / parent | "
        "breadth lift | depth lift | insufficient evidence |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        verdict = t["verdict"] + (" (simulated)" if t["simulated"] else "")
        lines.append(
            f"| {t['generation']} | {t['parent']} | {t['gate']} | {verdict} | {t['built_upon']} | {t['wr_user']} | "
            f"{t['wr_internal']} | "
            f"{t['steer_new']} / {t['steer_parent']} | {t['steer_test_new']} / {t['steer_test_parent']} | "
            f"{t['ifeval']} | {t['fluency_new']} / {t['fluency_parent']} | {t['breadth']} | {t['depth']} | "
            f"{', '.join(t['insufficient']) or '—'} |"
        )
    if any(t["simulated"] for t in table):
        lines += ["", "_A/B readouts marked simulated come from simulated users or logs, not real traffic._"]
    return "\n".join(lines)


SECTIONS = [
    (
        "winrates",
        "Win rates",
        "Per slice and judge, against the parent. Above the ceiling is treated as reward "
        "hacking, not progress; the gap between slices is gated too.",
    ),
    (
        "steer",
        "Steerability",
        "Share of replies to the steerability suite that keep every rule of their character "
        "card, new generation against its parent.",
    ),
    (
        "style",
        "Style",
        "Style-artifact monitors on the eval replies: length, lists, emoji, stock phrases, refusals "
        "and false refusals on benign prompts.",
    ),
    (
        "ab",
        "A/B",
        "Relative lift of engagement breadth (engaged users / exposed) and depth (messages per engaged "
        "user), delta-method 95% intervals.",
    ),
]
CHART_OF = {"winrates": "win_rates", "steer": "steerability", "style": "style", "ab": "ab_lifts"}


TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "generation_report.html.j2"


def _env() -> jinja2.Environment:
    # the page's own template, and the quality report's stylesheet and macros it shares
    env = template_environment(TEMPLATES)
    env.filters["num"] = lambda v: _fmt(v, digits=4) if isinstance(v, float) else ("—" if v is None else str(v))
    return env


def build_html(
    rows: Sequence[Mapping[str, Any]],
    config: GenerationReportConfig | None = None,
    charts: Mapping[str, str] | None = None,
    generated_at: str | None = None,
) -> str:
    config = config or GenerationReportConfig()
    charts = dict(charts if charts is not None else build_plots(rows, config))
    table = summary_rows(rows, config)
    latest = table[-1] if table else None
    return (
        _env()
        .get_template(TEMPLATE)
        .render(
            title=config.title,
            rows=table,
            charts=charts,
            sections=SECTIONS,
            chart_of=CHART_OF,
            generated_at=generated_at or datetime.now(UTC).isoformat(timespec="seconds"),
            latest_status=_status(latest["gate"]) if latest else "unknown",
            any_simulated=any(t["simulated"] for t in table),
            status=_status,
            verdict_status=_verdict_status,
            outcome_pill=lambda o: {"pass": "pass", "fail": "fail"}.get(o, "insufficient"),
            gate_pill=lambda s: {"ok": "pass", "warn": "warn", "error": "fail", "insufficient": "insufficient"}.get(
                s, "unknown"
            ),
            release_rule=config.release_rule,
        )
    )


def write_generation_report(
    generations: pl.DataFrame, out_dir: str | Path, config: GenerationReportConfig | None = None
) -> GenerationReportFiles:
    """Render `out_dir/index.html` (atomically) and return it with the markdown summary."""
    config = config or GenerationReportConfig()
    rows = parse_generations(generations)
    charts = build_plots(rows, config)
    index = atomic_write_text(Path(out_dir) / "index.html", build_html(rows, config, charts))
    return GenerationReportFiles(
        index=index, markdown=build_markdown(rows, config), generations=len(rows), plots=sorted(charts), charts=charts
    )
