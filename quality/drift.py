"""Population stability index (PSI): how far today's distribution moved from a reference day.

PSI = sum_i (c_i - r_i) * ln(c_i / r_i) over bins with reference shares r and current shares c;
it is the symmetric KL divergence, computed here with `scipy.special.rel_entr`. Numeric values are
binned at the reference day's quantiles (so each bin holds about the same share of the reference),
categories are compared share by share. Conventional reading: < 0.1 stable, 0.1–0.25 a moderate
shift worth a look, > 0.25 a major shift.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import rel_entr

STABLE = "stable"
MODERATE = "moderate"
MAJOR = "major"
NO_DATA = "no_data"


@dataclass
class DriftConfig:
    """Binning and thresholds of the PSI."""

    bins: int = field(default=10, metadata={"help": "Quantile bins taken from the reference day (numeric PSI)."})
    moderate: float = field(default=0.1, metadata={"help": "PSI from which a shift is moderate."})
    major: float = field(default=0.25, metadata={"help": "PSI from which a shift is major."})
    epsilon: float = field(default=1e-4, metadata={"help": "Floor for an empty bin's share, so the log stays finite."})

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ValueError(f"bins={self.bins}: use at least 2 quantile bins, e.g. 10")
        if not 0 < self.moderate < self.major:
            raise ValueError(
                f"moderate={self.moderate}, major={self.major}: need 0 < moderate < major, e.g. 0.1 < 0.25"
            )
        if not 0 < self.epsilon < 0.01:
            raise ValueError(f"epsilon={self.epsilon}: use a small positive share, e.g. 1e-4")


@dataclass
class PSIResult:
    """A PSI value with the per-bin shares behind it (enough to plot the comparison)."""

    name: str
    psi: float
    status: str
    labels: list[str]
    reference_shares: list[float]
    current_shares: list[float]
    n_reference: int
    n_current: int
    contributions: list[float] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        top = sorted(zip(self.labels, self.contributions), key=lambda t: -t[1])[:5]
        return {
            "psi": round(self.psi, 6) if np.isfinite(self.psi) else "nan",
            "status": self.status,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "top_moving_bins": {k: round(v, 6) for k, v in top},
        }


def status_of(psi: float, config: DriftConfig | None = None) -> str:
    cfg = config or DriftConfig()
    if not np.isfinite(psi):
        return NO_DATA
    return MAJOR if psi >= cfg.major else MODERATE if psi >= cfg.moderate else STABLE


def psi_from_shares(reference: np.ndarray, current: np.ndarray, epsilon: float = 1e-4) -> tuple[float, np.ndarray]:
    """PSI of two share vectors over the same bins (floored at `epsilon`, renormalised); per-bin terms too."""
    r = np.clip(np.asarray(reference, dtype=np.float64), epsilon, None)
    c = np.clip(np.asarray(current, dtype=np.float64), epsilon, None)
    r, c = r / r.sum(), c / c.sum()
    terms = rel_entr(c, r) + rel_entr(r, c)
    return float(terms.sum()), terms


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def psi_numeric(
    reference: Iterable[float] | np.ndarray,
    current: Iterable[float] | np.ndarray,
    *,
    name: str = "value",
    config: DriftConfig | None = None,
) -> PSIResult:
    """PSI of a numeric distribution, binned at the reference's quantiles (NaNs are ignored)."""
    cfg = config or DriftConfig()
    ref = np.asarray(list(reference) if not isinstance(reference, np.ndarray) else reference, dtype=np.float64)
    cur = np.asarray(list(current) if not isinstance(current, np.ndarray) else current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        return PSIResult(name, float("nan"), NO_DATA, [], [], [], int(ref.size), int(cur.size))
    # cut points are observed reference values (lengths are integers: no cut at 3.2); ties collapse
    # into one bin, and a cut at the minimum would only open an always-empty first bin
    cuts = np.unique(np.quantile(ref, np.linspace(0, 1, cfg.bins + 1)[1:-1], method="inverted_cdf"))
    cuts = cuts[cuts > ref.min()]
    if cuts.size == 0:  # a constant reference: anything else today is a shift, so give it bins
        v = float(ref.min())
        cuts = np.array([v, np.nextafter(v, np.inf)])
    edges = np.concatenate(([-np.inf], cuts, [np.inf]))
    ref_counts = np.bincount(np.searchsorted(cuts, ref, side="right"), minlength=len(edges) - 1)
    cur_counts = np.bincount(np.searchsorted(cuts, cur, side="right"), minlength=len(edges) - 1)
    r, c = ref_counts / ref.size, cur_counts / cur.size
    psi, terms = psi_from_shares(r, c, cfg.epsilon)
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if lo == -np.inf:
            labels.append(f"< {_fmt(hi)}")
        elif hi == np.inf:
            labels.append(f"> {_fmt(edges[-3])}" if labels[-1].startswith("=") else f">= {_fmt(lo)}")
        else:
            labels.append(f"= {_fmt(lo)}" if hi == np.nextafter(lo, np.inf) else f"{_fmt(lo)}–{_fmt(hi)}")
    return PSIResult(
        name, psi, status_of(psi, cfg), labels, r.tolist(), c.tolist(), int(ref.size), int(cur.size), terms.tolist()
    )


def _shares(x: Mapping[str, float] | Iterable[Any]) -> tuple[dict[str, float], int]:
    if isinstance(x, Mapping):
        weights = {str(k): float(v) for k, v in x.items()}
        n = int(round(sum(weights.values())))
    else:
        labels, counts = np.unique(np.asarray([str(v) for v in x], dtype=object), return_counts=True)
        weights = {str(k): float(v) for k, v in zip(labels, counts)}
        n = int(counts.sum())
    total = sum(weights.values())
    return ({k: v / total for k, v in weights.items()} if total > 0 else {}), n


def psi_categorical(
    reference: Mapping[str, float] | Iterable[Any],
    current: Mapping[str, float] | Iterable[Any],
    *,
    name: str = "category",
    config: DriftConfig | None = None,
) -> PSIResult:
    """PSI of categorical shares. Each side is a mapping category -> count/share, or the raw labels.

    A category present on one side only counts as share `epsilon` on the other (a new cluster or a
    vanished role is a shift, not an error).
    """
    cfg = config or DriftConfig()
    ref, n_ref = _shares(reference)
    cur, n_cur = _shares(current)
    if not ref or not cur:
        return PSIResult(name, float("nan"), NO_DATA, [], [], [], n_ref, n_cur)
    labels = sorted(set(ref) | set(cur), key=lambda k: (-ref.get(k, 0.0), k))
    r = np.array([ref.get(k, 0.0) for k in labels])
    c = np.array([cur.get(k, 0.0) for k in labels])
    psi, terms = psi_from_shares(r, c, cfg.epsilon)
    return PSIResult(name, psi, status_of(psi, cfg), labels, r.tolist(), c.tolist(), n_ref, n_cur, terms.tolist())
