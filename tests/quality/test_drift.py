from __future__ import annotations

import numpy as np
import pytest

from quality.drift import (
    MAJOR,
    MODERATE,
    NO_DATA,
    STABLE,
    DriftConfig,
    psi_categorical,
    psi_from_shares,
    psi_numeric,
    status_of,
)


@pytest.fixture()
def rng():
    return np.random.default_rng(7)


def test_identical_distributions_have_zero_psi(rng):
    x = rng.lognormal(4, 1, 5000).round()
    r = psi_numeric(x, x.copy())
    assert r.psi == pytest.approx(0.0, abs=1e-12) and r.status == STABLE
    assert sum(r.reference_shares) == pytest.approx(1.0) and len(r.labels) == 10


def test_two_samples_of_one_distribution_are_stable(rng):
    r = psi_numeric(rng.lognormal(4, 1, 20_000), rng.lognormal(4, 1, 20_000))
    assert r.psi < 0.02 and r.status == STABLE


def test_shifted_distribution_is_major(rng):
    ref = rng.normal(100, 15, 10_000)
    r = psi_numeric(ref, rng.normal(130, 15, 10_000))
    assert r.psi > 0.25 and r.status == MAJOR


def test_known_psi_value():
    # two bins, shares 0.5/0.5 vs 0.8/0.2: PSI = 0.3*ln(1.6) + 0.3*ln(2.5)
    expected = 0.3 * np.log(0.8 / 0.5) + 0.3 * np.log(0.5 / 0.2)
    psi, terms = psi_from_shares(np.array([0.5, 0.5]), np.array([0.8, 0.2]))
    assert psi == pytest.approx(expected) and terms.sum() == pytest.approx(expected)
    r = psi_categorical({"user": 50, "assistant": 50}, {"user": 80, "assistant": 20})
    assert r.psi == pytest.approx(expected) and r.n_reference == 100


def test_moderate_band():
    assert status_of(0.05) == STABLE and status_of(0.1) == MODERATE and status_of(0.3) == MAJOR
    assert status_of(0.15, DriftConfig(moderate=0.2, major=0.4)) == STABLE


def test_categorical_new_and_vanished_categories():
    r = psi_categorical({"a": 0.5, "b": 0.5}, {"a": 0.5, "c": 0.5})
    assert r.status == MAJOR and set(r.labels) == {"a", "b", "c"}
    same = psi_categorical(["user", "assistant", "user"], ["assistant", "user", "user"])
    assert same.psi == pytest.approx(0.0, abs=1e-12)


def test_constant_reference_still_sees_a_shift():
    assert psi_numeric([5] * 50, [5] * 50).psi == pytest.approx(0.0, abs=1e-12)
    moved = psi_numeric([5] * 50, [6] * 50)
    assert moved.status == MAJOR and moved.labels == ["< 5", "= 5", "> 5"]


def test_nan_is_ignored_and_empty_is_no_data():
    r = psi_numeric([1.0, 2.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    assert r.n_reference == 3 and r.psi == pytest.approx(0.0, abs=1e-12)
    empty = psi_numeric([], [1.0])
    assert empty.status == NO_DATA and np.isnan(empty.psi)
    assert empty.to_metadata()["psi"] == "nan"


def test_bins_follow_reference_quantiles(rng):
    ref = rng.uniform(0, 100, 10_000)
    r = psi_numeric(ref, ref, config=DriftConfig(bins=4))
    assert len(r.labels) == 4
    assert all(s == pytest.approx(0.25, abs=0.01) for s in r.reference_shares)


def test_config_validation():
    with pytest.raises(ValueError, match="bins"):
        DriftConfig(bins=1)
    with pytest.raises(ValueError, match="moderate"):
        DriftConfig(moderate=0.3, major=0.2)
