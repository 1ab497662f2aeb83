"""A/B readout: engagement breadth and depth lift of a treatment model over control.

Population and metrics, over a window of `window_days` days from `start`:

- a user is *exposed* when `ab_exposures` logs them in the window; their arm is the arm they were
  logged in and their start is their first exposure day in the window. A user logged in both arms is
  contaminated and dropped (`multiple_arms`), as are rows with an unknown arm or no user;
- a user's messages are the `ab_events` messages from their first exposure day to the end of the
  window (activity before exposure was not caused by the arm; activity after the window is outside
  the experiment); `engaged` means at least one such message;
- breadth = engaged users / exposed users; depth = messages of engaged users / engaged users.

Both are ratio metrics (mean of a numerator over mean of a denominator per user, the denominator being
1 for breadth and `engaged` for depth). The relative lift T/C - 1 gets two 95% intervals: the delta
method (the per-arm ratio variance of Deng et al. 2018, then the variance of the ratio of two
independent arms) with its z-test p-value, and a nonparametric bootstrap over users. The bootstrap is
exact and vectorized: a user is fully described by their message count, so resampling n users is one
multinomial draw over the distinct counts.

Sample-ratio mismatch: a chi-square goodness-of-fit test of the exposed users per arm against the
planned split; a tiny p-value (below `srm_alpha`) means the assignment or the logging is broken and
the lifts must not be trusted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from pipeline import schema

STAGE = "ab_readout"
METRICS = ("breadth", "depth")

EXPOSURES_SCHEMA = pl.Schema({"user_hash": pl.Utf8, "arm": pl.Utf8, "day": pl.Date})
EVENTS_SCHEMA = pl.Schema({"user_hash": pl.Utf8, "day": pl.Date, "messages": pl.Int64})
# one row per metric: the arms' values, the relative lift and its delta-method and bootstrap intervals
LIFTS = pl.Schema(
    {
        "metric": pl.Utf8,
        "control": pl.Float64,
        "treatment": pl.Float64,
        "lift": pl.Float64,
        "delta_se": pl.Float64,
        "delta_ci_low": pl.Float64,
        "delta_ci_high": pl.Float64,
        "delta_p_value": pl.Float64,
        "significant": pl.Boolean,
        "boot_ci_low": pl.Float64,
        "boot_ci_high": pl.Float64,
        "boot_p_value": pl.Float64,
        # simulated readouts only: the interval over the replayed conversations (resampled in pairs), since which
        # prompts were replayed is itself a sample and thousands of simulated users cannot make it larger
        "prompt_ci_low": pl.Float64,
        "prompt_ci_high": pl.Float64,
        # simulated from a model only: the spread of the lift over refits of that model on resampled training
        # users (its own estimation error), and the interval with all three sources of error together
        "model_ci_low": pl.Float64,
        "model_ci_high": pl.Float64,
        "model_sd": pl.Float64,
        "total_ci_low": pl.Float64,
        "total_ci_high": pl.Float64,
    }
)


def _as_date(value: dt.date | str | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


@dataclass
class AbConfig:
    start: dt.date | str | None = field(
        default=None, metadata={"help": "First day of the window (ISO date); default: the first exposure day."}
    )
    window_days: int = field(default=7, metadata={"help": "Length of the analysis window in days."})
    control: str = field(default="control", metadata={"help": "Name of the control arm in ab_exposures."})
    treatment: str = field(default="treatment", metadata={"help": "Name of the treatment arm in ab_exposures."})
    planned_treatment_share: float = field(
        default=0.5, metadata={"help": "Planned share of users assigned to treatment, for the sample-ratio test."}
    )
    alpha: float = field(default=0.05, metadata={"help": "1 - confidence level of the intervals; significance level."})
    srm_alpha: float = field(
        default=0.001, metadata={"help": "Sample-ratio mismatch is flagged when the chi-square p-value is below this."}
    )
    n_bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples; 0 skips the bootstrap."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})

    def __post_init__(self) -> None:
        self.start = _as_date(self.start)
        if self.window_days < 1:
            raise ValueError(f"window_days={self.window_days} must be >= 1 (e.g. 7)")
        if self.control == self.treatment:
            raise ValueError("control and treatment must name different arms")
        if not 0 < self.planned_treatment_share < 1:
            raise ValueError(f"planned_treatment_share={self.planned_treatment_share} must be in (0, 1), e.g. 0.5")
        for name in ("alpha", "srm_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in (0, 1)")
        if self.n_bootstrap != 0 and self.n_bootstrap < 200:
            raise ValueError(f"n_bootstrap={self.n_bootstrap}: use 0 (no bootstrap) or >= 200")


@dataclass
class AbReadout:
    """`lifts`: one row per metric; `arms`: per-arm counts and metric values; `srm`: the sample-ratio
    test; `users`: one row per analysed user; `drops`: rows removed, per `schema.DROPS`; `counters`:
    rows read and rows outside the analysis, by reason."""

    lifts: pl.DataFrame
    arms: pl.DataFrame
    srm: pl.DataFrame
    users: pl.DataFrame
    drops: pl.DataFrame
    counters: dict[str, int]


# ---------------------------------------------------------------------------------------------
# Aggregation


def _drops(df: pl.DataFrame, reason: str, detail: str, id_expr: pl.Expr) -> pl.DataFrame:
    return schema.drops_of(df, STAGE, id_expr, pl.lit(reason), pl.lit(detail))


def user_messages(
    exposures: pl.DataFrame, events: pl.DataFrame, config: AbConfig | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """(users, drops, counters): one row per exposed user (user_hash, arm, first_day, messages,
    engaged) following the population and window rules of the module docstring."""
    config = config or AbConfig()
    exposures = schema.conform(exposures, EXPOSURES_SCHEMA).with_row_index("_row")
    events = schema.conform(events, EVENTS_SCHEMA).with_row_index("_row")
    arms = (config.control, config.treatment)
    parts = []

    bad_exp = exposures.filter(pl.col("user_hash").is_null() | pl.col("day").is_null())
    parts.append(
        _drops(bad_exp, "null_field", "exposure without user_hash or day", pl.format("exposure:{}", pl.col("_row")))
    )
    exposures = exposures.filter(pl.col("user_hash").is_not_null() & pl.col("day").is_not_null())
    unknown = exposures.filter(~pl.col("arm").is_in(arms) | pl.col("arm").is_null())
    parts.append(_drops(unknown, "unknown_arm", f"arm not in {arms}", pl.format("exposure:{}", pl.col("_row"))))
    exposures = exposures.filter(pl.col("arm").is_in(arms))

    start = config.start or exposures["day"].min()
    if start is None:
        raise ValueError("ab_exposures has no valid rows: nothing to analyse")
    end = start + dt.timedelta(days=config.window_days)
    in_window = exposures.filter((pl.col("day") >= start) & (pl.col("day") < end))
    per_user = in_window.group_by("user_hash").agg(
        pl.col("arm").n_unique().alias("n_arms"), pl.col("arm").first(), pl.col("day").min().alias("first_day")
    )
    multi = per_user.filter(pl.col("n_arms") > 1)
    parts.append(
        _drops(multi.rename({"first_day": "day"}), "multiple_arms", "user exposed to both arms", pl.col("user_hash"))
    )
    per_user = per_user.filter(pl.col("n_arms") == 1).drop("n_arms")

    bad_ev = events.filter(
        pl.col("user_hash").is_null()
        | pl.col("day").is_null()
        | pl.col("messages").is_null()
        | (pl.col("messages") < 0)
    )
    parts.append(
        _drops(
            bad_ev,
            "bad_event",
            "event without user_hash/day or with null/negative messages",
            pl.format("event:{}", pl.col("_row")),
        )
    )
    events = events.filter(pl.col("user_hash").is_not_null() & pl.col("day").is_not_null() & (pl.col("messages") >= 0))
    ev = events.join(per_user.select("user_hash", "first_day"), on="user_hash", how="left")
    before = pl.col("day") < pl.col("first_day")
    after = pl.col("day") >= end
    counted = ev.filter(pl.col("first_day").is_not_null() & ~before & ~after)
    msgs = counted.group_by("user_hash").agg(pl.col("messages").sum())
    users = (
        per_user.join(msgs, on="user_hash", how="left")
        .with_columns(pl.col("messages").fill_null(0))
        .with_columns((pl.col("messages") > 0).alias("engaged"))
        .sort("user_hash")
    )
    counters = {
        "exposure_rows": exposures.height + bad_exp.height + unknown.height,
        "exposure_rows_outside_window": exposures.height - in_window.height,
        "users_exposed": per_user.height + multi.height,
        "users_multiple_arms": multi.height,
        "users_analysed": users.height,
        "event_rows": events.height + bad_ev.height,
        "event_rows_bad": bad_ev.height,
        "event_rows_unexposed_user": int(ev["first_day"].is_null().sum()),
        "event_rows_before_exposure": int(ev.filter(pl.col("first_day").is_not_null() & before).height),
        "event_rows_after_window": int(ev.filter(pl.col("first_day").is_not_null() & ~before & after).height),
        "event_rows_counted": counted.height,
    }
    drops = pl.concat(parts) if parts else schema.empty(schema.DROPS)
    return users, drops, counters


# ---------------------------------------------------------------------------------------------
# Statistics


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


def _bootstrap(msg_t: np.ndarray, msg_c: np.ndarray, config: AbConfig) -> dict[str, dict[str, float]]:
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


def analyze(users: pl.DataFrame, config: AbConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(lifts, arms, srm) from per-user rows (arm, messages, engaged)."""
    config = config or AbConfig()
    arm_rows, per_arm = [], {}
    for arm in (config.control, config.treatment):
        u = users.filter(pl.col("arm") == arm)
        m = u["messages"].to_numpy().astype(np.float64)
        e = (m > 0).astype(np.float64)
        per_arm[arm] = (m, e)
        arm_rows.append(
            {
                "arm": arm,
                "users": u.height,
                "engaged": int(e.sum()),
                "messages": int(m.sum()),
                "breadth": float(e.mean()) if m.size else None,
                "depth": float(m.sum() / e.sum()) if e.sum() else None,
            }
        )
    arms = pl.DataFrame(
        arm_rows,
        schema={
            "arm": pl.Utf8,
            "users": pl.Int64,
            "engaged": pl.Int64,
            "messages": pl.Int64,
            "breadth": pl.Float64,
            "depth": pl.Float64,
        },
    )
    srm = srm_test(arms["users"][0], arms["users"][1], config)
    (m_c, e_c), (m_t, e_t) = per_arm[config.control], per_arm[config.treatment]
    boot = _bootstrap(m_t, m_c, config) if config.n_bootstrap and e_t.sum() and e_c.sum() else {}
    est = lift_estimates(
        np.concatenate([m_c, m_t]), np.r_[np.zeros(m_c.size, bool), np.ones(m_t.size, bool)], config.alpha
    )
    rows = []
    for metric in METRICS:
        if min(e_c.sum(), e_t.sum()) < 2:
            rows.append({"metric": metric})
            continue
        d = {k: float(v) for k, v in est[metric].items()}
        rows.append(
            {
                "metric": metric,
                "control": d["control"],
                "treatment": d["treatment"],
                "lift": d["lift"],
                "delta_se": d["se"],
                "delta_ci_low": d["ci_low"],
                "delta_ci_high": d["ci_high"],
                "delta_p_value": d["p_value"],
                "significant": bool(d["p_value"] < config.alpha),
                **boot.get(metric, {}),
            }
        )
    lifts = pl.DataFrame(rows, schema=LIFTS)
    return lifts, arms, srm


def ab_readout(exposures: pl.DataFrame, events: pl.DataFrame, config: AbConfig | None = None) -> AbReadout:
    """The whole readout from the two logs."""
    config = config or AbConfig()
    users, drops, counters = user_messages(exposures, events, config)
    lifts, arms, srm = analyze(users, config)
    return AbReadout(lifts, arms, srm, users, drops, counters)


def lifts_by_metric(readout: AbReadout) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in readout.lifts.iter_rows(named=True)}


VERDICTS = ("ship", "no-ship", "inconclusive", "insufficient", "invalid")


def _significant(row: dict, sign: int) -> bool:
    """The delta-method interval and, when computed, the bootstrap, replayed-prompt and total (with the
    simulator's own error) intervals all exclude 0 on the `sign` side."""

    def beyond(lo, hi) -> bool:
        return lo is not None and hi is not None and (lo > 0 if sign > 0 else hi < 0)

    if not beyond(row.get("delta_ci_low"), row.get("delta_ci_high")):
        return False
    others = [(row.get(f"{k}_ci_low"), row.get(f"{k}_ci_high")) for k in ("boot", "prompt", "total")]
    return all(ci == (None, None) or beyond(*ci) for ci in others)


def ab_decision(
    lifts: pl.DataFrame, srm: pl.DataFrame, primary: str = "breadth", insufficient: str | None = None
) -> tuple[str, str]:
    """(verdict, reason), one of `VERDICTS`. invalid: sample-ratio mismatch, no lift can be trusted;
    insufficient: the model behind a simulated readout falls below its evidence minimum (`insufficient` says
    why), so its lifts neither ship nor reject; no-ship: a metric is significantly worse in treatment; ship: the
    primary metric (breadth) is significantly better and nothing is significantly worse; inconclusive: otherwise
    (intervals include 0, or too few engaged users for an estimate). Significant = the delta-method and
    bootstrap 95% intervals both exclude 0, and so do the replayed-prompt and total intervals of a simulated
    readout."""
    if srm.height and bool(srm["srm"][0]):
        return "invalid", f"sample-ratio mismatch (p = {srm['p_value'][0]:.2g}): assignment or logging is broken"
    if insufficient:
        return "insufficient", f"insufficient evidence: {insufficient}"
    rows = {r["metric"]: r for r in lifts.iter_rows(named=True)}
    worse = [m for m, r in rows.items() if _significant(r, -1)]
    if worse:
        return "no-ship", f"significantly worse in treatment: {', '.join(worse)}"
    if primary in rows and _significant(rows[primary], +1):
        return "ship", f"{primary} significantly better, no metric significantly worse"
    return "inconclusive", f"{primary} lift not significant (or not estimable); nothing significantly worse"
