"""The global order of a step's rows: by row id, never by position in a frame.

A day's rows reach a step in whatever order its inputs were read or its shards collected. Whatever is
seeded by position (k-means' sampled rows and initial centroids, a stable sort's ties, the order in which
a history stores what it kept) is therefore computed on the rows sorted by their id, which every order of
the same rows shares, and the result is handed back in the caller's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl


def id_order(ids: Sequence[str]) -> np.ndarray:
    """The permutation that sorts `ids` (unique row ids): `ids[order]` is the global order."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    return pl.Series(list(ids), dtype=pl.Utf8).arg_sort().to_numpy().astype(np.int64)


def is_id_ordered(order: np.ndarray) -> bool:
    return bool(np.array_equal(order, np.arange(order.size)))


def positions(order: np.ndarray) -> np.ndarray:
    """Where each row of the global order sits in the caller's order: the inverse permutation."""
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return inverse
