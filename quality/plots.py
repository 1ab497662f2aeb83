"""Small PNG charts for the quality report, returned as base64 data URIs.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend
switch, no display needed), so plotting is safe in worker processes and threads. Embedding the PNG
as a data URI keeps the report one self-contained file that renders offline.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

BLUE = "#2563eb"
GREY = "#94a3b8"
RED = "#dc2626"
AMBER = "#d97706"
INK = "#0f172a"
MUTED = "#64748b"
GRID = "#e2e8f0"

_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.edgecolor": GRID,
    "axes.labelcolor": MUTED,
    "xtick.color": MUTED,
    "ytick.color": INK,
}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax, *, horizontal: bool) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    ax.grid(axis="x" if horizontal else "y", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(label: str, n: int = 28) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def bar_counts(
    counts: Mapping[str, float], *, title: str, color: str = BLUE, percent: bool = False, keep_order: bool = False
) -> str:
    """Horizontal bars (largest on top, or in the mapping's order), the value printed at each bar's end."""
    items = list(counts.items())[:15][::-1] if keep_order else sorted(counts.items(), key=lambda kv: kv[1])[-15:]
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 0.8 + 0.28 * max(len(items), 2))
        ax = fig.add_subplot()
        labels = [_short(str(k)) for k, _ in items]
        values = [float(v) * (100 if percent else 1) for _, v in items]
        bars = ax.barh(labels, values, color=color, height=0.62)
        ax.bar_label(
            bars, labels=[f"{v:.2f}%" if percent else f"{v:,.0f}" for v in values], padding=3, fontsize=8, color=INK
        )
        ax.set_xlim(0, (max(values) if values and max(values) > 0 else 1) * 1.18)
        if percent:
            ax.set_xlabel("% of rows")
        ax.set_title(title, loc="left", fontsize=10, color=INK, fontweight="bold")
        _style(ax, horizontal=True)
        return to_data_uri(fig)


def funnel(
    stages: Sequence[tuple[str, int | None, int | None]], *, title: str = "Rows kept and dropped per stage"
) -> str:
    """Per stage, rows kept (blue) and rows dropped (red) stacked, in pipeline order from the top."""
    stages = list(stages)[::-1]
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 0.8 + 0.34 * max(len(stages), 2))
        ax = fig.add_subplot()
        names = [_short(s) for s, _, _ in stages]
        kept = [float(o or 0) for _, _, o in stages]
        dropped = [max(float((i or 0) - (o or 0)), 0.0) for _, i, o in stages]
        ax.barh(names, kept, color=BLUE, height=0.62, label="kept")
        ax.barh(names, dropped, left=kept, color=RED, alpha=0.75, height=0.62, label="dropped")
        for y, (k, d) in enumerate(zip(kept, dropped)):
            ax.text(k + d, y, f"  {k:,.0f}" + (f" (−{d:,.0f})" if d else ""), va="center", fontsize=8, color=INK)
        ax.set_xlim(0, max([k + d for k, d in zip(kept, dropped)] + [1]) * 1.3)
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False, fontsize=8)
        ax.set_title(title, loc="left", fontsize=10, color=INK, fontweight="bold")
        _style(ax, horizontal=True)
        return to_data_uri(fig)


def compare_shares(
    labels: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    title: str,
    reference_label: str = "previous day",
    current_label: str = "today",
    rotate: bool = False,
) -> str:
    """Grouped bars of two share vectors over the same bins (reference grey, today blue)."""
    n = len(labels)
    with matplotlib.rc_context(_RC):
        fig = _figure(6.4, 2.9)
        ax = fig.add_subplot()
        x = list(range(n))
        w = 0.4
        ax.bar([i - w / 2 for i in x], [100 * r for r in reference], width=w, color=GREY, label=reference_label)
        ax.bar([i + w / 2 for i in x], [100 * c for c in current], width=w, color=BLUE, label=current_label)
        ax.set_xticks(
            x,
            [_short(str(s), 14) for s in labels],
            rotation=35 if rotate or n > 8 else 0,
            ha="right" if rotate or n > 8 else "center",
            fontsize=7.5,
        )
        ax.set_ylabel("share of rows (%)")
        ax.legend(frameon=False, fontsize=8)
        ax.set_title(title, loc="left", fontsize=10, color=INK, fontweight="bold")
        _style(ax, horizontal=False)
        return to_data_uri(fig)
