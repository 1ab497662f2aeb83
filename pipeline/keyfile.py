"""Sorted key files: the cross-day key lookups of exact and near dedup, in O(log stored) per key.

A key file holds a (k, n) uint64 array whose row 0 is sorted (the key) and whose other rows carry
what the lookup returns (an entry's row, band, day, ...). It is a plain ``.npy`` file, memory-mapped
when read: a binary search of each of the day's keys touches only the pages it lands on, so a
lookup neither scans a run's keys nor holds them in memory. Why not a DuckDB join over Parquet: a
join reads every stored key of every run, so a day's cost grew with the history it is checked
against.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAGIC = b"\x93NUMPY"


def save(path: Path, columns: np.ndarray) -> None:
    """Write `columns` (k, n) uint64 sorted by row 0 (they are sorted here)."""
    columns = np.asarray(columns, dtype=np.uint64)
    columns = np.ascontiguousarray(columns[:, np.argsort(columns[0], kind="stable")])
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the name
        np.save(f, columns, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())  # the caller renames the file into place: its content must be on disk first


def is_keyfile(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def load(path: Path) -> np.ndarray:
    """The (k, n) array, memory-mapped."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def match(stored: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index into `keys`, stored columns (k, m)) of every stored entry whose key equals one of `keys`.
    Pass `keys` sorted when matching them against several files: sorted probes walk each file front to
    back, and the order is computed once."""
    keys = np.asarray(keys, dtype=np.uint64)
    lo = np.searchsorted(stored[0], keys, side="left")
    # most of a day's keys are new: only the probes found at `lo` need the end of their run of equal keys
    hit = np.flatnonzero(stored[0][np.minimum(lo, len(stored[0]) - 1)] == keys) if len(stored[0]) else lo[:0]
    if not hit.size:
        return np.zeros(0, dtype=np.int64), np.zeros((stored.shape[0], 0), dtype=np.uint64)
    count = np.searchsorted(stored[0], keys[hit], side="right") - lo[hit]
    probe = np.repeat(hit, count)
    position = np.repeat(lo[hit] - (np.cumsum(count) - count), count) + np.arange(count.sum())
    return probe, np.asarray(stored[:, position])
