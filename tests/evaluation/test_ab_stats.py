from __future__ import annotations

import numpy as np
import pytest

from evaluation.ab_config import AbConfig
from evaluation.ab_simulator import AbSimConfig, simulate_ab_logs, simulate_users
from evaluation.ab_stats import lift_estimates, ratio_delta, srm_test
from evaluation.ab_test import ab_readout

REPS = 300


def _coverage(lift_breadth: float, lift_depth: float, seed: int) -> dict[str, dict[str, float]]:
    cfg = AbSimConfig(n_users=10_000, lift_breadth=lift_breadth, lift_depth=lift_depth, seed=seed)
    sim = simulate_users(cfg, reps=REPS)
    est = lift_estimates(sim["messages"], sim["treated"], alpha=0.05)
    out = {}
    for metric, truth in cfg.truth().items():
        e = est[metric]
        out[metric] = {
            "coverage": float(((e["ci_low"] <= truth) & (truth <= e["ci_high"])).mean()),
            "significant": float((e["p_value"] < 0.05).mean()),
            "bias": float(e["lift"].mean() - truth),
        }
    return out


def test_delta_interval_covers_the_planted_lift():
    res = _coverage(0.06, 0.04, seed=101)
    for metric, r in res.items():
        assert 0.92 <= r["coverage"] <= 0.98, (metric, r)
        assert abs(r["bias"]) < 0.01, (metric, r)


def test_zero_lift_is_significant_about_five_percent_of_the_time():
    res = _coverage(0.0, 0.0, seed=202)
    for metric, r in res.items():
        assert 0.02 <= r["significant"] <= 0.08, (metric, r)
        assert 0.92 <= r["coverage"] <= 0.98, (metric, r)


def test_bootstrap_agrees_with_delta_method():
    cfg = AbSimConfig(n_users=20_000, lift_breadth=0.1, lift_depth=0.05, seed=3)
    readout = ab_readout(*simulate_ab_logs(cfg), AbConfig(n_bootstrap=2000, seed=1))
    again = ab_readout(*simulate_ab_logs(cfg), AbConfig(n_bootstrap=2000, seed=1))
    assert readout.lifts.equals(again.lifts)  # seeded
    for r in readout.lifts.iter_rows(named=True):
        width_delta = r["delta_ci_high"] - r["delta_ci_low"]
        width_boot = r["boot_ci_high"] - r["boot_ci_low"]
        assert width_boot == pytest.approx(width_delta, rel=0.15), r
        assert abs((r["boot_ci_low"] + r["boot_ci_high"]) / 2 - r["lift"]) < 0.2 * width_delta
        # the bootstrap p-value cannot go below 1 / n_bootstrap; above that the two tests agree
        assert max(r["boot_p_value"], 1 / 2000) == pytest.approx(max(r["delta_p_value"], 1 / 2000), abs=0.01)


def test_sample_ratio_mismatch():
    skewed = ab_readout(
        *simulate_ab_logs(AbSimConfig(n_users=20_000, treatment_share=0.53, seed=5)), AbConfig(n_bootstrap=0)
    )
    fine = ab_readout(
        *simulate_ab_logs(AbSimConfig(n_users=20_000, treatment_share=0.5, seed=5)), AbConfig(n_bootstrap=0)
    )
    assert skewed.srm["srm"][0] and skewed.srm["p_value"][0] < 1e-6
    assert not fine.srm["srm"][0]
    # against the split that was actually planned, the same counts are fine
    planned = srm_test(
        int(skewed.srm["n_control"][0]), int(skewed.srm["n_treatment"][0]), AbConfig(planned_treatment_share=0.53)
    )
    assert not planned["srm"][0]


def test_ratio_delta_matches_simple_variance_for_a_mean():
    x = np.array([0, 1, 1, 0, 1, 1, 1, 0], dtype=float)
    r, v = ratio_delta(x, np.ones_like(x))
    assert r == pytest.approx(x.mean()) and v == pytest.approx(x.var(ddof=1) / x.size)
