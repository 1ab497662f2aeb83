from __future__ import annotations

import hashlib

import numpy as np

from pipeline.seeded_uniform import seeded_uniform, seeded_uniforms


def test_a_key_draws_the_same_number_under_its_salt_and_another_under_another():
    assert seeded_uniform("user-1", "split") == seeded_uniform("user-1", "split")
    assert seeded_uniform("user-1", "split") != seeded_uniform("user-1", "rows")
    # the empty salt is unkeyed BLAKE2b-64, read as a fraction of 2**64
    unkeyed = int.from_bytes(hashlib.blake2b(b"user-1", digest_size=8).digest(), "big") / 2**64
    assert seeded_uniform("user-1") == unkeyed


def test_draws_are_uniform_and_a_null_key_draws_nan():
    u = seeded_uniforms([f"k{i}" for i in range(20_000)], "0")
    assert u.dtype == np.float64 and ((u >= 0) & (u < 1)).all()
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 1_800
    assert np.isnan(seeded_uniforms(["a", None], "0")[1])
    # a salt is cut to BLAKE2b's 64-byte key
    assert seeded_uniform("a", "s" * 64) == seeded_uniform("a", "s" * 80)
