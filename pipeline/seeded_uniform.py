"""Seeded hash-to-uniform draws: a number in [0, 1) that a key always maps to, for a given salt.

Splits, samples and held-out sets are chosen by these draws rather than by a random generator, so a row's
fate depends on its own key and the salt alone: the same on every machine and run, whatever rows come
with it or in which order. A draw is BLAKE2b-64 of the key, keyed by the salt, read as a fraction of
2**64; the empty salt is BLAKE2b unkeyed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_SALT_BYTES = 64  # BLAKE2b's longest key


def seeded_uniform(key: str, salt: str = "") -> float:
    """The draw in [0, 1) of `key` under `salt` (a salt longer than 64 bytes is cut to its first 64)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=salt.encode()[:_SALT_BYTES]).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def seeded_uniforms(keys: Sequence[str | None], salt: str = "") -> np.ndarray:
    """`seeded_uniform` of each key, as float64; NaN for a null key."""
    return np.array([np.nan if k is None else seeded_uniform(k, salt) for k in keys], dtype=np.float64)
