"""The A/B readout's statistics: relative lifts of two ratio metrics with delta-method and bootstrap intervals,
and the sample-ratio-mismatch test.

Both metrics are ratio metrics (mean of a numerator over mean of a denominator per user, the denominator being
1 for breadth and `engaged` for depth). The relative lift T/C - 1 gets two 95% intervals: the delta method (the
per-arm ratio variance of Deng et al. 2018, then the variance of the ratio of two independent arms) with its
z-test p-value, and a nonparametric bootstrap over users. The bootstrap is exact and vectorized: a user is fully
described by their message count, so resampling n users is one multinomial draw over the distinct counts.

Sample-ratio mismatch: a chi-square goodness-of-fit test of the exposed users per arm against the planned
split; a tiny p-value (below `srm_alpha`) means the assignment or the logging is broken and the lifts must not
be trusted.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

from evaluation.ab_config import AbConfig


def ratio_delta(num: np.ndarray, den: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ratio of means mean(num)/mean(den) over the users selected by `mask`, and its delta-method
    variance (Deng et al. 2018). Works along the last axis, so a batch of experiments is one call."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    w = np.ones_like(num) if mask is None else np.asarray(mask, dtype=np.float64)
    n = w.sum(axis=-1)
    # an empty arm or one without engaged users yields NaN, reported as a missing estimate
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (num * w).sum(axis=-1) / n, (den * w).sum(axis=-1) / n
        dx, dy = (num - mx[..., None]) * w, (den - my[..., None]) * w
        vx, vy, cxy = ((dx**2).sum(-1) / (n - 1), (dy**2).sum(-1) / (n - 1), (dx * dy).sum(-1) / (n - 1))
        r = mx / my
        var = (vx / my**2 - 2 * mx * cxy / my**3 + mx**2 * vy / my**4) / n
    return r, var


def lift_estimates(messages: np.ndarray, treated: np.ndarray, alpha: float = 0.05) -> dict[str, dict[str, np.ndarray]]:
    """Delta-method breadth and depth lifts from per-user message counts and arm flags (last axis =
    users; leading axes = independent experiments)."""
    messages = np.asarray(messages, dtype=np.float64)
    treated = np.asarray(treated, dtype=bool)
    engaged = (messages > 0).astype(np.float64)
    out = {}
    for metric, num, den in (("breadth", engaged, np.ones_like(engaged)), ("depth", messages, engaged)):
        r_t, v_t = ratio_delta(num, den, treated)
        r_c, v_c = ratio_delta(num, den, ~treated)
        out[metric] = {"control": r_c, "treatment": r_t, **relative_lift_delta(r_t, v_t, r_c, v_c, alpha)}
    return out


def relative_lift_delta(
    r_t: np.ndarray | float,
    var_t: np.ndarray | float,
    r_c: np.ndarray | float,
    var_c: np.ndarray | float,
    alpha: float = 0.05,
) -> dict[str, np.ndarray]:
    """Lift r_t/r_c - 1 of two independent arms, its delta-method standard error, interval and
    two-sided z-test p-value. Vectorized: arrays give one result per element."""
    r_t, var_t, r_c, var_c = (np.asarray(x, dtype=np.float64) for x in (r_t, var_t, r_c, var_c))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = r_t / r_c
        se = np.abs(ratio) * np.sqrt(var_t / r_t**2 + var_c / r_c**2)
        lift = ratio - 1
        p = 2 * stats.norm.sf(np.abs(lift) / se)
    z = stats.norm.ppf(1 - alpha / 2)
    return {"lift": lift, "se": se, "ci_low": lift - z * se, "ci_high": lift + z * se, "p_value": p}


def _bootstrap_draws(messages: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Breadth and depth of `n_boot` bootstrap resamples of the users with these message counts."""
    values, counts = np.unique(messages, return_counts=True)
    n = messages.size
    draws = rng.multinomial(n, counts / n, size=n_boot)
    zero = values == 0
    engaged = n - draws[:, zero].sum(axis=1)
    total = draws @ values.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return engaged / n, total / engaged


def bootstrap_lifts(msg_t: np.ndarray, msg_c: np.ndarray, config: AbConfig) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(config.seed)
    bt, dtr = _bootstrap_draws(msg_t, config.n_bootstrap, rng)
    bc, dc = _bootstrap_draws(msg_c, config.n_bootstrap, rng)
    out = {}
    for metric, lifts in (("breadth", bt / bc - 1), ("depth", dtr / dc - 1)):
        lifts = lifts[np.isfinite(lifts)]
        lo, hi = np.quantile(lifts, [config.alpha / 2, 1 - config.alpha / 2])
        p = min(1.0, 2 * min((lifts <= 0).mean(), (lifts >= 0).mean()))
        out[metric] = {"boot_ci_low": float(lo), "boot_ci_high": float(hi), "boot_p_value": max(p, 1.0 / lifts.size)}
    return out


def srm_test(n_control: int, n_treatment: int, config: AbConfig | None = None) -> pl.DataFrame:
    """Chi-square test of the arm sizes against the planned split."""
    config = config or AbConfig()
    total = n_control + n_treatment
    share = config.planned_treatment_share
    if total == 0:
        chi2, p = float("nan"), float("nan")
    else:
        res = stats.chisquare([n_control, n_treatment], f_exp=[total * (1 - share), total * share])
        chi2, p = float(res.statistic), float(res.pvalue)
    return pl.DataFrame(
        {
            "n_control": [n_control],
            "n_treatment": [n_treatment],
            "planned_treatment_share": [share],
            "observed_treatment_share": [n_treatment / total if total else None],
            "chi2": [chi2],
            "p_value": [p],
            "srm": [bool(p < config.srm_alpha) if total else False],
        }
    )
