"""Integer quotas per cell of the sampling pool.

- Water-filling: equal counts per group, capped by what each holds; what a small group cannot fill
  goes to the others.
- Capped raking: iterative proportional fitting of the available counts onto target marginals,
  every cell capped by what it holds. Uncapped, it is the minimum-KL fit to the available counts,
  so it keeps the association between dimensions that the data has.
"""

from __future__ import annotations

import numpy as np

SHARE_TOL = 1e-6


def water_fill(available: np.ndarray, n: int, tiebreak: np.ndarray) -> np.ndarray:
    """Equal counts per group, capped by availability; the leftover of the capped is shared by the rest."""
    if n >= available.sum():
        return available.copy()
    lo, hi = 0, int(available.max())
    while lo < hi:  # largest level L with sum(min(a, L)) <= n
        mid = (lo + hi + 1) // 2
        if np.minimum(available, mid).sum() <= n:
            lo = mid
        else:
            hi = mid - 1
    alloc = np.minimum(available, lo)
    room = np.flatnonzero(available > lo)
    extra = n - int(alloc.sum())
    alloc[room[np.argsort(tiebreak[room], kind="stable")[:extra]]] += 1
    return alloc


def integerize(x: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Round real cell counts to integers with the same (rounded) total, never above the cap."""
    base = np.minimum(np.floor(x + 1e-9), cap).astype(np.int64)
    need = int(round(float(x.sum()))) - int(base.sum())
    if need > 0:
        frac = np.where(base < cap, x - base, -np.inf)
        order = np.argsort(-frac, kind="stable")[:need]
        base[order[np.isfinite(frac[order])]] += 1
    return base


def rake(
    available: np.ndarray, index: list[np.ndarray], shares: list[np.ndarray], n: float, iterations: int
) -> tuple[np.ndarray, float]:
    """Capped IPF: cell counts with marginals `shares * n`, each cell at most its availability.
    Returns the counts and the worst marginal shortfall (achieved / target, 1 = met)."""
    x = available * (n / available.sum())
    targets = [s * n for s in shares]
    for _ in range(iterations):
        for idx, t in zip(index, targets):
            m = np.bincount(idx, weights=x, minlength=len(t))
            ratio = np.divide(t, m, out=np.zeros_like(t), where=m > 0)
            x = np.minimum(x * ratio[idx], available)
        err = max(np.abs(np.bincount(idx, weights=x, minlength=len(t)) - t).max() for idx, t in zip(index, targets))
        if err <= 1e-6 * n + 1e-9:
            break
    ratio = 1.0
    for idx, t in zip(index, targets):
        m = np.bincount(idx, weights=x, minlength=len(t))
        pos = t > 0
        if pos.any():
            ratio = min(ratio, float((m[pos] / t[pos]).min()))
    return x, ratio


def effective_shares(levels: list[str], counts: np.ndarray, wanted: dict[str, float]) -> np.ndarray:
    """Target shares over the levels present: the rest of a partial spec goes to unlisted levels by
    size; levels asked for but absent are left out and the others renormalised. All zero when no
    present level is wanted (the pool is then empty, and the report says why)."""
    wanted = {str(k): float(v) for k, v in wanted.items()}
    listed = np.array([lvl in wanted for lvl in levels], dtype=bool)
    s = np.array([wanted.get(lvl, 0.0) for lvl in levels], dtype=np.float64)
    rest = 1.0 - sum(wanted.values())
    if rest > SHARE_TOL and (~listed).any():
        s[~listed] = rest * counts[~listed] / counts[~listed].sum()
    return s / s.sum() if s.sum() > 0 else s


def spread_shortfall(
    index: list[np.ndarray], shares: list[np.ndarray], x: np.ndarray, n: float
) -> tuple[list[np.ndarray], bool]:
    """Lower each short level's share to what it reached and give the deficit to the other levels
    of its dimension in proportion to their shares: the stratified analogue of water-filling."""
    out, changed = [], False
    for idx, s in zip(index, shares):
        reached = np.bincount(idx, weights=x, minlength=len(s)) / n
        short = reached < s * (1 - 1e-6) - 1e-12
        room = ~short & (s > 0)
        if short.any() and room.any():
            s = s.copy()
            deficit = float((s[short] - reached[short]).sum())
            s[short] = reached[short]
            s[room] += deficit * s[room] / s[room].sum()
            changed = True
        out.append(s)
    return out, changed
