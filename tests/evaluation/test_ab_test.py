from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from evaluation.ab_config import AbConfig
from evaluation.ab_simulator import AbSimConfig, simulate_ab_logs, simulate_users
from evaluation.ab_stats import lift_estimates
from evaluation.ab_test import ab_readout, lifts_by_metric, user_messages
from pipeline import schema


def test_readout_from_logs_equals_the_array_computation():
    cfg = AbSimConfig(n_users=6000, seed=7)
    exposures, events = simulate_ab_logs(cfg)
    readout = ab_readout(exposures, events, AbConfig(n_bootstrap=0))
    sim = simulate_users(cfg)
    est = lift_estimates(sim["messages"], sim["treated"])
    got = lifts_by_metric(readout)
    for metric in ("breadth", "depth"):
        assert got[metric]["lift"] == pytest.approx(float(est[metric]["lift"]), rel=1e-12)
        assert got[metric]["delta_se"] == pytest.approx(float(est[metric]["se"]), rel=1e-9)
    arms = {r["arm"]: r for r in readout.arms.iter_rows(named=True)}
    assert arms["treatment"]["users"] == int(sim["treated"].sum())
    assert arms["control"]["messages"] == int(sim["messages"][~sim["treated"]].sum())
    c = readout.counters
    # the simulator's noise (repeat exposures, activity outside the window, unexposed users) was ignored
    assert c["users_analysed"] == 6000 and c["event_rows_unexposed_user"] == cfg.unexposed_users
    assert c["event_rows_before_exposure"] > 0 and c["event_rows_after_window"] > 0
    assert (
        c["event_rows_counted"]
        + c["event_rows_before_exposure"]
        + c["event_rows_after_window"]
        + c["event_rows_unexposed_user"]
        + c["event_rows_bad"]
        == c["event_rows"]
    )


def _day(n: int) -> dt.date:
    return dt.date(2024, 3, 1) + dt.timedelta(days=n)


def test_window_and_population_rules():
    exposures = pl.DataFrame(
        {
            "user_hash": ["a", "a", "b", "c", "c", "d", "e", None, "f"],
            "arm": [
                "control",
                "control",
                "treatment",
                "control",
                "treatment",
                "holdout",
                "treatment",
                "control",
                "treatment",
            ],
            "day": [_day(2), _day(1), _day(0), _day(0), _day(1), _day(0), _day(9), _day(0), _day(6)],
        }
    )
    events = pl.DataFrame(
        {
            "user_hash": ["a", "a", "a", "b", "b", "c", "z", None, "b", "f"],
            "day": [_day(0), _day(1), _day(6), _day(3), _day(7), _day(2), _day(2), _day(2), _day(4), _day(6)],
            "messages": [5, 2, 3, 4, 9, 1, 8, 1, -2, 0],
        }
    )
    users, drops, counters = user_messages(exposures, events, AbConfig(start="2024-03-01", window_days=7))
    got = {r["user_hash"]: (r["arm"], r["first_day"], r["messages"], r["engaged"]) for r in users.iter_rows(named=True)}
    assert got == {
        "a": ("control", _day(1), 5, True),  # day-0 activity precedes exposure; day 1 and day 6 count
        "b": ("treatment", _day(0), 4, True),  # day 7 is after the window; the negative count is bad data
        "f": ("treatment", _day(6), 0, False),  # exposed, sent nothing: counts against breadth
    }  # c: both arms; d: unknown arm; e: exposed after the window; None: no user
    reasons = sorted(drops["reason_code"].to_list())
    assert reasons == ["bad_event", "bad_event", "multiple_arms", "null_field", "unknown_arm"]
    assert drops.schema == schema.DROPS
    assert counters["event_rows_unexposed_user"] == 2  # z, and c who was dropped
    assert counters["event_rows_before_exposure"] == 1 and counters["event_rows_after_window"] == 1


def test_one_armed_experiment_reports_no_lift_instead_of_crashing():
    exposures = pl.DataFrame({"user_hash": ["a", "b"], "arm": ["control", "control"], "day": [_day(0), _day(0)]})
    events = pl.DataFrame({"user_hash": ["a"], "day": [_day(1)], "messages": [3]})
    readout = ab_readout(exposures, events)
    assert readout.lifts["lift"].is_null().all() and readout.lifts.height == 2
    assert readout.arms["users"].to_list() == [2, 0]


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (AbConfig, {"window_days": 0}, "window_days"),
        (AbConfig, {"treatment": "control"}, "different arms"),
        (AbConfig, {"planned_treatment_share": 1.0}, "planned_treatment_share"),
        (AbConfig, {"n_bootstrap": 50}, "n_bootstrap"),
        (AbSimConfig, {"base_breadth": 0.9, "lift_breadth": 0.5}, "base_breadth"),
        (AbSimConfig, {"base_depth": 1.0}, "base_depth"),
        (AbSimConfig, {"exposure_days": 9}, "exposure_days"),
    ],
)
def test_bad_config(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
