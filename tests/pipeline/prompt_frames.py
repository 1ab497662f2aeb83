"""Synthetic prompt frames for the sampling and user-split tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

DAY = dt.date(2024, 5, 1)


def prompts_frame(
    cluster_sizes: list[int], n_users: int = 400, internal_share: float = 0.5, seed: int = 0
) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = sum(cluster_sizes)
    clusters = np.repeat(np.arange(len(cluster_sizes)), cluster_sizes)
    users = rng.integers(0, n_users, n)
    # source is a property of the user, as in real traffic
    user_internal = rng.random(n_users) < internal_share
    return pl.DataFrame(
        {
            "prompt_id": [f"p{i:06d}" for i in range(n)],
            "cluster_id": clusters.astype(np.int32),
            "user_hash": [f"u_{u:05d}" for u in users],
            "source": np.where(user_internal[users], "internal", "external"),
            "character_id": rng.choice(["bob", "ann", "max"], n, p=[0.6, 0.3, 0.1]),
            "day": [DAY] * n,
        }
    )
