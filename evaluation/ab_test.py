"""A/B readout: engagement breadth and depth lift of a treatment model over control.

Population and metrics, over a window of `window_days` days from `start`:

- a user is *exposed* when `ab_exposures` logs them in the window; their arm is the arm they were
  logged in and their start is their first exposure day in the window. A user logged in both arms is
  contaminated and dropped (`multiple_arms`), as are rows with an unknown arm or no user;
- a user's messages are the `ab_events` messages from their first exposure day to the end of the
  window (activity before exposure was not caused by the arm; activity after the window is outside
  the experiment); `engaged` means at least one such message;
- breadth = engaged users / exposed users; depth = messages of engaged users / engaged users.

The intervals and the sample-ratio-mismatch test are `evaluation.ab_stats`'s; the inputs, settings and
readout `evaluation.ab_config`'s.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from evaluation.ab_config import EVENTS_SCHEMA, EXPOSURES_SCHEMA, LIFTS, METRICS, STAGE, AbConfig, AbReadout
from evaluation.ab_stats import bootstrap_lifts, lift_estimates, srm_test
from pipeline import schema


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
    boot = bootstrap_lifts(m_t, m_c, config) if config.n_bootstrap and e_t.sum() and e_c.sum() else {}
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
