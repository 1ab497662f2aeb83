"""The generations report: every recorded generation of the flywheel on one offline HTML page.

Input is the `generations` table (`GENERATIONS`, one row per recorded generation). Its JSON columns
carry what the page draws; every key is optional, and a missing one shows as "—" rather than
breaking the page, so generations recorded by older code still render:

- `metrics` (`METRICS_VERSION` 1):
  - `win_rates`: list of {slice, judge, n, win_rate, ci_low, ci_high} (new generation vs its parent);
  - `steerability`: {"new"|"parent": {following_rate, violation_rate, n}};
  - `style`: {"new"|"parent": {mean_chars, mean_words, list_rate, emoji_rate, mean_emoji,
    stock_phrase_rate, refusal_rate, false_refusal_rate, n}};
  - `reward_models`: {"pointwise"|"pairwise": {metric: value}} (held-out AUC, pair accuracy, ...);
  - `ab`: {source, simulated, verdict, lifts: {breadth|depth: {lift, delta_ci_low, delta_ci_high,
    boot_ci_low, boot_ci_high, delta_p_value, boot_p_value}}, srm: {p_value, srm, ...}, arms: [...]};
  - `ifeval` (optional): {"new"|"parent": {prompt_strict_acc, ...}};
- `inputs`: window days with content hashes, dataset content hashes, reward-model folders and hashes;
- `checkpoints`: paths of the generation's checkpoints;
- `gate_detail`: list of {gate, severity, detail}.

The page renders offline: CSS is the quality report's stylesheet inlined, charts are PNGs embedded
as data URIs (matplotlib's object API on the Agg canvas, as `quality.plots` does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation import evidence
from pipeline.lake import atomic_write_text
from quality import plots
from quality.report import TEMPLATES as QUALITY_TEMPLATES

METRICS_VERSION = 1
ROLES = ("new", "parent")
STYLE_METRICS = ("mean_chars", "list_rate", "emoji_rate", "stock_phrase_rate", "refusal_rate", "false_refusal_rate")
AB_METRICS = ("breadth", "depth")

GENERATIONS = pl.Schema(
    {
        "generation": pl.Utf8,
        "number": pl.Int64,
        "parent": pl.Utf8,
        "created_at": pl.Utf8,
        "recorded_at": pl.Utf8,
        "window_start": pl.Date,
        "window_end": pl.Date,
        "days": pl.List(pl.Utf8),
        # JSON documents (see the module docstring)
        "inputs": pl.Utf8,
        "checkpoints": pl.Utf8,
        "metrics": pl.Utf8,
        # passed | passed_with_warnings | failed
        "gate": pl.Utf8,
        "gate_detail": pl.Utf8,
        # ship | no-ship | inconclusive | invalid
        "ab_verdict": pl.Utf8,
        # simulate | lake
        "ab_source": pl.Utf8,
        # the run chart's measures, as plain columns so SQL reads them without JSON
        "released": pl.Boolean,
        # names of the release gates that blocked it (empty when released)
        "blocked_by": pl.List(pl.Utf8),
        # held-out character cards: share of replies keeping every rule, share of rule checks failed
        "steer_if_heldout": pl.Float64,
        "steer_violation_heldout": pl.Float64,
        # win rate against the parent per slice (pointwise judge)
        "win_rate_user": pl.Float64,
        "win_rate_internal": pl.Float64,
        # relative lifts of the simulated A/B readout
        "sim_breadth_lift": pl.Float64,
        "sim_depth_lift": pl.Float64,
        # the verdicts with insufficient evidence: gate names, and ab_readout when the A/B readout's model had too
        # little; they neither passed nor blocked
        "insufficient": pl.List(pl.Utf8),
    }
)
# column -> the JSON type it holds; anything else reads as empty
JSON_COLUMNS = {"inputs": dict, "checkpoints": dict, "metrics": dict, "gate_detail": list}


@dataclass
class GenerationReportConfig:
    title: str = field(default="CharacterFlywheel generations", metadata={"help": "Title of the page."})
    win_rate_warn: float = field(default=0.60, metadata={"help": "Win-rate warning line drawn on the chart."})
    win_rate_ceiling: float = field(default=0.65, metadata={"help": "Win-rate ceiling line drawn on the chart."})
    hash_chars: int = field(default=12, metadata={"help": "Characters of a content hash shown in tables."})
    min_decided_gates: int = field(
        default=3, metadata={"help": "The release rule's fewest decided gates, stated above the verdicts."}
    )

    @property
    def release_rule(self) -> str:
        return (
            f"a generation is released when no gate failed and at least {self.min_decided_gates} gates had the "
            "evidence to decide; a verdict with insufficient evidence neither passes nor blocks."
        )

    def __post_init__(self) -> None:
        if not 0.5 <= self.win_rate_warn <= self.win_rate_ceiling <= 1:
            raise ValueError("need 0.5 <= win_rate_warn <= win_rate_ceiling <= 1 (defaults 0.60 and 0.65)")
        if self.hash_chars < 4:
            raise ValueError(f"hash_chars={self.hash_chars} must be >= 4")
        if self.min_decided_gates < 0:
            raise ValueError(f"min_decided_gates={self.min_decided_gates} must be >= 0 (default 3)")


@dataclass
class GenerationReportFiles:
    index: Path
    markdown: str
    generations: int
    plots: list[str]
    # chart name -> PNG data URI (the run chart), for places that show images inline
    charts: dict[str, str] = field(default_factory=dict)


def _loads(value: Any, kind: type) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None  # a corrupt document must not take the page down: it shows as missing
    return value if isinstance(value, kind) else kind()


def parse_generations(generations: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows sorted by generation number, JSON columns decoded (an unreadable one becomes {})."""
    if generations.is_empty():
        return []
    frame = generations.sort("number") if "number" in generations.columns else generations
    rows = []
    for r in frame.iter_rows(named=True):
        row = dict(r)
        for col, kind in JSON_COLUMNS.items():
            row[col] = _loads(row.get(col), kind)
        rows.append(row)
    return rows


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _pointwise_win_rate(metrics: Mapping[str, Any], slice_name: str) -> float | None:
    for w in metrics.get("win_rates") or []:
        if isinstance(w, dict) and w.get("slice") == slice_name and w.get("judge") == "pointwise":
            return _num(w.get("win_rate"))
    return None


def run_chart_columns(metrics: Mapping[str, Any], blocked_by: Sequence[str]) -> dict[str, Any]:
    """The `generations` table's plain columns of one generation, from its `metrics` document and the names of
    the release gates that blocked it (none: released)."""
    new_steer = _d(_d(metrics.get("steerability")).get("new"))
    lifts = _d(_d(metrics.get("ab")).get("lifts"))
    return {
        "released": not blocked_by,
        "blocked_by": sorted(blocked_by),
        "steer_if_heldout": _num(new_steer.get("following_rate")),
        "steer_violation_heldout": _num(new_steer.get("violation_rate")),
        "win_rate_user": _pointwise_win_rate(metrics, "eval_user"),
        "win_rate_internal": _pointwise_win_rate(metrics, "eval_internal"),
        "sim_breadth_lift": _num(_d(lifts.get("breadth")).get("lift")),
        "sim_depth_lift": _num(_d(lifts.get("depth")).get("lift")),
    }


def metrics_long(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Every plotted figure as one long frame: generation, number, group, series, value, ci_low, ci_high."""
    out: list[dict[str, Any]] = []

    def add(row, group, series, value, lo=None, hi=None):
        out.append(
            {
                "generation": row["generation"],
                "number": row.get("number"),
                "group": group,
                "series": series,
                "value": _num(value),
                "ci_low": _num(lo),
                "ci_high": _num(hi),
            }
        )

    for row in rows:
        m = _d(row.get("metrics"))
        for w in (x for x in m.get("win_rates") or [] if isinstance(x, dict)):
            add(
                row,
                "win_rate",
                f"{w.get('slice')}/{w.get('judge')}",
                w.get("win_rate"),
                w.get("ci_low"),
                w.get("ci_high"),
            )
        for role in ROLES:
            steer = _d(_d(m.get("steerability")).get(role))
            add(row, "steerability", f"following_rate/{role}", steer.get("following_rate"))
            add(row, "steerability", f"violation_rate/{role}", steer.get("violation_rate"))
            style = _d(_d(m.get("style")).get(role))
            for metric in STYLE_METRICS:
                add(row, "style", f"{metric}/{role}", style.get(metric))
        for metric, lift in _d(_d(m.get("ab")).get("lifts")).items():
            lift = _d(lift)
            add(row, "ab_lift", metric, lift.get("lift"), lift.get("delta_ci_low"), lift.get("delta_ci_high"))
    frame = pl.DataFrame(
        out,
        schema={
            "generation": pl.Utf8,
            "number": pl.Int64,
            "group": pl.Utf8,
            "series": pl.Utf8,
            "value": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
        },
    )
    return frame.filter(pl.col("value").is_not_null())


# ---- charts ---------------------------------------------------------------------------------------

PALETTE = (plots.BLUE, plots.AMBER, "#0891b2", "#7c3aed", plots.RED, "#16a34a")
_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.edgecolor": plots.GRID,
    "axes.labelcolor": plots.MUTED,
    "xtick.color": plots.MUTED,
    "ytick.color": plots.INK,
}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _axes_over(ax, labels: list[str], title: str, ylabel: str) -> None:
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left", fontsize=10, color=plots.INK, fontweight="bold")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color=plots.GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def _series_chart(
    long: pl.DataFrame,
    group: str,
    labels: list[str],
    title: str,
    ylabel: str,
    hlines: Sequence[tuple[float, str, str]] = (),
    percent: bool = False,
    ylim: tuple[float, float] | None = None,
) -> str | None:
    part = long.filter(pl.col("group") == group)
    if part.is_empty():
        return None
    pos = {g: i for i, g in enumerate(labels)}
    scale = 100.0 if percent else 1.0
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 3.0)
        ax = fig.add_subplot()
        names = part["series"].unique(maintain_order=True).to_list()
        spread = 0.08 * (len(names) - 1)
        for k, name in enumerate(names):
            s = part.filter(pl.col("series") == name)
            x = [pos[g] - spread / 2 + 0.08 * k for g in s["generation"]]
            y = [v * scale for v in s["value"]]
            color = PALETTE[k % len(PALETTE)]
            ax.plot(x, y, marker="o", color=color, linewidth=1.4, markersize=4, label=name)
            lo, hi = s["ci_low"].to_list(), s["ci_high"].to_list()
            have = [i for i in range(len(x)) if lo[i] is not None and hi[i] is not None]
            if have:
                ax.errorbar(
                    [x[i] for i in have],
                    [y[i] for i in have],
                    yerr=[[y[i] - lo[i] * scale for i in have], [hi[i] * scale - y[i] for i in have]],
                    fmt="none",
                    ecolor=color,
                    elinewidth=1,
                    capsize=3,
                    alpha=0.8,
                )
        for value, label, color in hlines:
            ax.axhline(value * scale, color=color, linewidth=0.9, linestyle="--")
            ax.text(len(labels) - 0.5, value * scale, f" {label}", va="center", ha="left", fontsize=7, color=color)
        _axes_over(ax, labels, title, ylabel)
        if ylim is not None:  # rates on their whole scale: a small change must not look like a cliff
            ax.set_ylim(ylim[0] * scale, ylim[1] * scale)
        ax.legend(frameon=False, fontsize=7, ncols=2, loc="best")
        return plots.to_data_uri(fig)


def _style_chart(long: pl.DataFrame, labels: list[str]) -> str | None:
    part = long.filter(pl.col("group") == "style")
    if part.is_empty():
        return None
    pos = {g: i for i, g in enumerate(labels)}
    with matplotlib.rc_context(_RC):
        fig = _figure(7.2, 4.2)
        axes = fig.subplots(2, 3).ravel()
        for ax, metric in zip(axes, STYLE_METRICS):
            for role, color, style in (("parent", plots.GREY, "--"), ("new", plots.BLUE, "-")):
                s = part.filter(pl.col("series") == f"{metric}/{role}")
                if s.height:
                    ax.plot(
                        [pos[g] for g in s["generation"]],
                        s["value"].to_list(),
                        marker="o",
                        markersize=3.5,
                        color=color,
                        linestyle=style,
                        linewidth=1.3,
                        label=role,
                    )
            _axes_over(ax, labels, metric, "")
            if metric != "mean_chars":
                top = part.filter(pl.col("series").str.starts_with(metric + "/"))["value"].max()
                ax.set_ylim(0, max(0.05, 1.25 * float(top or 0.0)))
            ax.title.set_fontsize(8.5)
        axes[0].legend(frameon=False, fontsize=7)
        return plots.to_data_uri(fig)


def build_plots(rows: Sequence[Mapping[str, Any]], config: GenerationReportConfig) -> dict[str, str]:
    """Chart name -> PNG data URI; a chart with nothing to draw is left out."""
    long = metrics_long(rows)
    labels = [r["generation"] for r in rows]
    charts = {
        "win_rates": _series_chart(
            long,
            "win_rate",
            labels,
            "Win rate against the parent (95% CI)",
            "win rate",
            hlines=[
                (0.5, "parity", plots.MUTED),
                (config.win_rate_warn, "warn", plots.AMBER),
                (config.win_rate_ceiling, "ceiling", plots.RED),
            ],
            ylim=(0.0, 1.0),
        ),
        "steerability": _series_chart(
            long,
            "steerability",
            labels,
            "Held-out character cards: instruction-following and violation rates",
            "rate (%)",
            percent=True,
            ylim=(0.0, 1.0),
        ),
        "style": _style_chart(long, labels),
        "ab_lifts": _series_chart(
            long,
            "ab_lift",
            labels,
            "A/B lift of treatment over control (95% CI)",
            "relative lift (%)",
            hlines=[(0.0, "no effect", plots.MUTED)],
            percent=True,
        ),
    }
    return {k: v for k, v in charts.items() if v}


# ---- tables and text ------------------------------------------------------------------------------


def _fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    f = _num(v)
    if f is None:
        return "—"
    return f"{100 * f:+.1f}%" if pct else f"{f:.{digits}f}"


def _win_rate(m: Mapping[str, Any], slice_name: str, judge: str) -> dict[str, Any] | None:
    for w in m.get("win_rates") or []:
        if isinstance(w, dict) and w.get("slice") == slice_name and w.get("judge") == judge:
            return w
    return None


def _wr_text(w: Mapping[str, Any] | None) -> str:
    if not w or _num(w.get("win_rate")) is None:
        return "—"
    ci = f" [{_fmt(w.get('ci_low'))}, {_fmt(w.get('ci_high'))}]" if _num(w.get("ci_low")) is not None else ""
    return f"{_fmt(w.get('win_rate'))}{ci}"


def _lift_text(lift: Mapping[str, Any] | None) -> str:
    if not lift or _num(lift.get("lift")) is None:
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
    }


def summary_rows(rows: Sequence[Mapping[str, Any]], config: GenerationReportConfig) -> list[dict[str, Any]]:
    """One display row per generation: what the overview table and the markdown show."""
    out = []
    for r in rows:
        m, inputs = _d(r.get("metrics")), _d(r.get("inputs"))
        ab = _d(m.get("ab"))
        lifts = _d(ab.get("lifts"))
        steer = _d(m.get("steerability"))
        datasets = _d(inputs.get("datasets"))
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
                "ab_reason": ab.get("reason") or "—",
                "ab_evidence": evidence.describe_readout(_d(ab.get("evidence"))),
                "samples": [x for x in m.get("samples") or [] if isinstance(x, dict)],
                "steer_new": _fmt(_d(steer.get("new")).get("following_rate")),
                "steer_parent": _fmt(_d(steer.get("parent")).get("following_rate")),
                "breadth": _lift_text(_d(lifts.get("breadth"))),
                "depth": _lift_text(_d(lifts.get("depth"))),
                "datasets": {k: str(v or "—")[: config.hash_chars] for k, v in datasets.items()},
                "gates": [_gate_row(g) for g in r.get("gate_detail") or [] if isinstance(g, dict)],
                "inputs": json.dumps(inputs, indent=2, sort_keys=True, default=str),
                "checkpoints": _d(r.get("checkpoints")),
                "reward_models": {k: _d(v) for k, v in _d(m.get("reward_models")).items()},
            }
        )
    return out


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
        "| generation | parent | gate | A/B | win rate user (pointwise) | win rate internal | "
        "steerability new / parent | breadth lift | depth lift | insufficient evidence |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        verdict = t["verdict"] + (" (simulated)" if t["simulated"] else "")
        lines.append(
            f"| {t['generation']} | {t['parent']} | {t['gate']} | {verdict} | {t['wr_user']} | {t['wr_internal']} | "
            f"{t['steer_new']} / {t['steer_parent']} | {t['breadth']} | {t['depth']} | "
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
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([TEMPLATES, QUALITY_TEMPLATES]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
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
