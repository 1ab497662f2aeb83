"""The win rate's intervals: a seeded bootstrap (scipy.stats.bootstrap, BCa by default) over the unit that was
really sampled, and the per-slice summary that states which unit each interval resampled.

Held-out *users* are resampled, each with all their prompts, since one user's prompts share their taste and
their conversations and are not independent draws. A slice with fewer than `min_cluster_users` users is
resampled by conversation instead, and replies without user or conversation ids by prompt; the prompt-level
interval stands next to it (`prompt_ci_*`), whose narrowness shows how much an interval over prompts would
overstate the evidence.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

from evaluation.winrate_config import CI_UNITS, CLUSTER_COLUMNS, SUMMARY_SCHEMA, WinRateConfig


def bootstrap_ci(values: np.ndarray, config: WinRateConfig, rng: np.random.Generator) -> tuple[float, float]:
    """Interval of the mean of `values`; a constant sample has the degenerate interval [v, v]."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan"), float("nan")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    res = stats.bootstrap(
        (values,),
        np.mean,
        vectorized=True,
        n_resamples=config.n_resamples,
        confidence_level=config.confidence_level,
        method=config.ci_method,
        random_state=rng,
        batch=500,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def cluster_bootstrap_ci(
    values: np.ndarray, clusters: np.ndarray, config: WinRateConfig, rng: np.random.Generator
) -> tuple[float, float]:
    """Interval of the mean of `values` when whole clusters (users, conversations) were sampled: the
    clusters are resampled with all their values (the ratio of summed outcomes to summed prompts). One
    value per cluster is the plain bootstrap over values."""
    values = np.asarray(values, dtype=np.float64)
    _, owner = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    k = int(owner.max()) + 1 if owner.size else 0
    if k == values.size:
        return bootstrap_ci(values, config, rng)
    if values.size and np.all(values == values[0]):
        return float(values[0]), float(values[0])
    if k < 2:
        return float("nan"), float("nan")
    sums = np.bincount(owner, weights=values, minlength=k)
    counts = np.bincount(owner, minlength=k).astype(np.float64)

    def ratio(s: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return s.sum(axis=axis) / c.sum(axis=axis)

    for method in dict.fromkeys((config.ci_method, "percentile")):  # BCa is undefined on a degenerate jackknife
        res = stats.bootstrap(
            (sums, counts),
            ratio,
            paired=True,
            vectorized=True,
            n_resamples=config.n_resamples,
            confidence_level=config.confidence_level,
            method=method,
            random_state=rng,
            batch=500,
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            break
    return low, high


def _cluster_ids(o: pl.DataFrame, config: WinRateConfig) -> tuple[str, np.ndarray, int, int]:
    """(unit, cluster id per prompt, users, conversations) of one slice's outcomes: by user when it has at
    least `min_cluster_users` of them, else by conversation, else by prompt; a prompt without an id of the
    chosen unit is its own cluster."""
    ids = {c: (o[c] if c in o.columns else pl.Series(c, [None] * o.height, pl.Utf8)) for c in CLUSTER_COLUMNS}
    # None: the replies do not say who they belong to
    users, conversations = (ids[c].drop_nulls().n_unique() or None for c in CLUSTER_COLUMNS)
    order = CI_UNITS[CI_UNITS.index(config.ci_unit) :]
    unit = "prompt"
    if "user" in order and (users or 0) >= config.min_cluster_users:
        unit = "user"
    elif "conversation" in order and (conversations or 0) >= 2:
        unit = "conversation"
    if unit == "prompt":
        return unit, o["prompt_id"].to_numpy(), users, conversations
    column = ids["user_hash" if unit == "user" else "conversation_id"]
    own = [c if c is not None else f"prompt:{p}" for c, p in zip(column.to_list(), o["prompt_id"].to_list())]
    return unit, np.array(own, dtype=object), users, conversations


def summarize(outcomes: pl.DataFrame, config: WinRateConfig | None = None) -> pl.DataFrame:
    """(slice, judge, n, wins, ties, losses, win_rate, ci_low, ci_high, users, conversations, unit,
    prompt_ci_low, prompt_ci_high), one row per configured slice and judge; a slice with no prompts gets
    n = 0 and null rates. `ci_*` resample `unit` (see the module docstring), `prompt_ci_*` the prompts."""
    config = config or WinRateConfig()
    rng = np.random.default_rng(config.seed)
    rows = []
    judges = outcomes["judge"].unique(maintain_order=True).to_list()
    for slice_name in config.slices:
        for judge in judges:
            part = outcomes.filter((pl.col("slice") == slice_name) & (pl.col("judge") == judge))
            o = part["outcome"].to_numpy()
            unit, clusters, users, conversations = _cluster_ids(part, config)
            lo, hi = bootstrap_ci(o, config, rng) if o.size else (None, None)
            plo, phi = lo, hi
            if o.size and unit != "prompt":
                lo, hi = cluster_bootstrap_ci(o, clusters, config, rng)
            rows.append(
                {
                    "slice": slice_name,
                    "judge": judge,
                    "n": int(o.size),
                    "wins": int((o == 1).sum()),
                    "ties": int((o == 0.5).sum()),
                    "losses": int((o == 0).sum()),
                    "win_rate": float(o.mean()) if o.size else None,
                    "ci_low": lo,
                    "ci_high": hi,
                    "users": users,
                    "conversations": conversations,
                    "unit": unit if o.size else None,
                    "prompt_ci_low": plo,
                    "prompt_ci_high": phi,
                }
            )
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)
