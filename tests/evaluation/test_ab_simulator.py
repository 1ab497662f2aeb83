from __future__ import annotations

import numpy as np
import pytest

from evaluation.ab_config import EVENTS_SCHEMA, EXPOSURES_SCHEMA
from evaluation.ab_simulator import AbSimConfig, simulate_ab_logs, simulate_users


def test_population_parameters_are_the_truth():
    cfg = AbSimConfig(n_users=400_000, base_breadth=0.3, base_depth=6.0, lift_breadth=0.1, lift_depth=0.2, seed=4)
    assert cfg.truth() == {"breadth": 0.1, "depth": 0.2}
    sim = simulate_users(cfg)
    m, t = sim["messages"], sim["treated"]
    engaged = m > 0
    assert engaged[~t].mean() == pytest.approx(0.3, abs=0.004)
    assert engaged[t].mean() == pytest.approx(0.33, abs=0.004)
    assert m[~t & engaged].mean() == pytest.approx(6.0, rel=0.02)
    assert m[t & engaged].mean() == pytest.approx(7.2, rel=0.02)
    # overdispersed: far more variance than a Poisson count of the same mean
    assert m[~t & engaged].var() > 3 * m[~t & engaged].mean()
    assert t.mean() == pytest.approx(0.5, abs=0.005)


def test_logs_follow_the_table_contracts_and_are_seeded(tmp_path):
    cfg = AbSimConfig(n_users=2000, seed=9)
    exposures, events = simulate_ab_logs(cfg)
    assert exposures.schema == EXPOSURES_SCHEMA and events.schema == EVENTS_SCHEMA
    assert set(exposures["arm"]) == {"control", "treatment"}
    assert exposures["user_hash"].n_unique() == 2000 and exposures.height > 2000  # repeat exposures
    assert (events["messages"] > 0).all()
    again = simulate_ab_logs(cfg)
    assert exposures.equals(again[0]) and events.equals(again[1])


def test_replications_are_independent_experiments():
    sim = simulate_users(AbSimConfig(n_users=1000, seed=1), reps=5)
    assert sim["messages"].shape == (5, 1000)
    assert len({tuple(row) for row in sim["treated"].astype(np.int8)}) == 5
