"""The generations report's charts: metrics per generation as PNG data URIs (matplotlib's object API on the
Agg canvas, as `quality.plots` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation.generation_report_config import GenerationReportConfig
from evaluation.generations_table import STYLE_METRICS, metrics_long
from quality import plots

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
