"""The semantic dedup history's FAISS indexes: a run's index, compacted segments, the shared quantizer,
and the search of a day's rows against them.

Each day's kept vectors get a FAISS index beside its run (`pipeline.history.DayChain`); runs are merged
into aligned segments of up to 32 days, so a search holds one segment's index in memory at a time.
The history's first 32-day segment is an IVF index whose coarse quantizer every later run and segment
shares: a day assigns its rows to that quantizer's lists once (one BLAS product) and each segment only
scans the lists its rows fall in, so a day's search costs the same per stored row however many segments
the history has, and later segments merge by moving lists, without re-assigning or re-training. The
quantizer belongs to the first segment, which is named by its last day's chain hash: a re-run first
month trains a new one, and the runs built on the old one change name with it (their entries record it).
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from pipeline.durable import fsync_file
from pipeline.faiss_gpu import gpu_count, to_gpus
from pipeline.history import Compaction, DayChain, Run


class IndexSettings(Protocol):
    """What the indexes read of `pipeline.semdedup.SemDedupConfig` (a dataclass: segments copy it)."""

    index_kind: str
    ivf_min_rows: int
    history_lists: int
    seed: int


def commit_run(
    history: DayChain,
    day: date,
    ids: list[str],
    x: np.ndarray,
    config: IndexSettings,
    quantizer=None,
    lists: np.ndarray | None = None,
) -> None:
    """A day's kept vectors as its run: row ids with a hash of each vector (so the run's content hash
    changes when the vectors do) and of the shared quantizer its index uses, and the FAISS index of
    the vectors beside it. `quantizer` (the history's shared one; looked up when not given) and
    `lists` (each row's nearest list of it) save the caller's work being done twice."""
    import faiss

    compaction = segment_compaction(config, history)
    if quantizer is None and len(ids):
        quantizer = shared_quantizer(history, config, compaction, day)
    entries = pl.DataFrame(
        {
            "row_id": pl.Series(ids, dtype=pl.Utf8),
            "vector_hash": [hashlib.blake2b(v.tobytes(), digest_size=8).hexdigest() for v in x],
        }
    )
    if quantizer is not None:  # the index depends on the quantizer too: another one must name a new run
        entries = entries.with_columns(quantizer=pl.lit(quantizer_digest(quantizer)))

    def write_index(path: Path) -> None:
        index = build_index(x, config)[0] if quantizer is None else _add_to_quantizer(quantizer, x, lists)
        faiss.write_index(index, str(path))
        fsync_file(path)  # renamed into place by the history's commit

    history.commit(day, entries, sidecars={"faiss": write_index} if len(ids) else None, compaction=compaction)


# Segments hold at most 32 days: a search holds one segment's index in memory at a time. The first
# block of 32 days also trains the quantizer that every later run and segment shares.
_SEGMENT_DAYS = 32
# training rows per list of the shared quantizer: fewer than FAISS's 39 (it warns), so that the first
# month can train enough lists for the years after it
_SHARED_ROWS_PER_LIST = 15


def segment_compaction(config: IndexSettings, history: DayChain) -> Compaction:
    return Compaction(max_block_days=_SEGMENT_DAYS, merge_sidecars=partial(_merge_indexes, config, history))


def shared_quantizer(history: DayChain, config: IndexSettings, compaction: Compaction, day: date):
    """The coarse quantizer (an IVF index's) of the history's first 32-day segment, for runs after it;
    None before it, with flat indexes, or when that segment was too small for an IVF index.

    Why one quantizer: with a quantizer per segment every segment costs a search of its own list
    centroids, and the number of segments grows with the history; with one, a day assigns its rows
    to lists once and each segment only scans the lists they fall in, so the search costs the same
    per stored row however the history is cut. Segments of runs that share it merge by moving lists
    (`merge_from`), without re-assigning or re-training."""
    import faiss

    history.parent_chain(day)  # the days before are in place (or the order error names them)
    first, last = history.first_day, history.first_day + timedelta(days=_SEGMENT_DAYS - 1)
    if config.index_kind == "flat" or day <= last:
        return None
    anchor = history.segment(first, last, compaction)
    if anchor is None or "faiss" not in anchor.sidecars:
        return None
    # memory-mapped: the quantizer is read, the segment's lists are not
    index = faiss.read_index(str(anchor.sidecars["faiss"]), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    if not isinstance(index, faiss.IndexIVF):
        return None
    quantizer = faiss.IndexFlatIP(index.d)
    quantizer.add(faiss.downcast_index(index.quantizer).reconstruct_n(0, index.nlist))
    return quantizer


def centroids(quantizer) -> np.ndarray:
    """A copy of a flat quantizer's centroids (nlist x d)."""
    import faiss

    flat = faiss.downcast_index(quantizer)
    return np.array(faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d)).reshape(flat.ntotal, flat.d)


def quantizer_digest(quantizer) -> str:
    """Which coarse quantizer an IVF index uses, so rows are assigned to lists once per quantizer. A
    sample of the centroids identifies a trained quantizer as well as all of them, at a 64th of the cost."""
    import faiss

    flat = faiss.downcast_index(quantizer)
    c = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    return hashlib.blake2b(np.ascontiguousarray(c[::8, ::8]).tobytes(), digest_size=16).hexdigest() + f"-{c.shape}"


def assign_lists(centroids: np.ndarray, x: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, lists) of each row's `k` nearest lists, best first: a BLAS product per block of rows,
    several times faster than a flat FAISS search of the centroids (measured on 2 cores)."""
    k = min(k, len(centroids))
    sims = np.empty((len(x), k), dtype=np.float32)
    lists = np.empty((len(x), k), dtype=np.int64)
    for s in range(0, len(x), block):
        all_sims = x[s : s + block] @ centroids.T
        top = np.argpartition(all_sims, -k, axis=1)[:, -k:] if k < len(centroids) else None
        if top is None:
            top = np.broadcast_to(np.arange(k), all_sims.shape)
        top_sims = np.take_along_axis(all_sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        sims[s : s + block] = np.take_along_axis(top_sims, order, axis=1)
        lists[s : s + block] = np.take_along_axis(top, order, axis=1)
    return sims, lists


def _add_to_quantizer(quantizer, x: np.ndarray, lists: np.ndarray | None = None):
    """An fp16 IVF index of `x` over the given (trained) quantizer (`lists`: each row's nearest list,
    computed when not given): assignment only, no training."""
    import faiss

    index = faiss.IndexIVFScalarQuantizer(
        quantizer, quantizer.d, quantizer.ntotal, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    index.train(x[:1])  # the quantizer is trained already; fp16 codes learn nothing
    x = np.ascontiguousarray(x, dtype=np.float32)
    lists = np.ascontiguousarray(
        assign_lists(centroids(quantizer), x, 1)[1][:, 0] if lists is None else lists, np.int64
    )
    index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(lists))
    return index


def _merge_indexes(
    config: IndexSettings, history: DayChain, pieces: list[Run], offsets: list[int], stem: Path
) -> dict[str, Path]:
    """One FAISS index over merged runs. After the first 32 days the pieces share the history's
    quantizer and their lists are moved into one index; otherwise the vectors are re-indexed (IVF once
    there are enough of them; the first 32-day segment trains the shared quantizer with as many lists
    as its rows allow)."""
    import faiss

    quantizer = shared_quantizer(history, config, segment_compaction(config, history), pieces[0].day)
    indexes = [faiss.read_index(str(p.sidecars["faiss"])) for p in pieces]
    if quantizer is not None and all(
        isinstance(i, faiss.IndexIVF) and quantizer_digest(i.quantizer) == quantizer_digest(quantizer) for i in indexes
    ):
        merged = indexes[0]
        for index, offset in zip(indexes[1:], offsets[1:]):
            merged.merge_from(index, offset)  # ids shift to the piece's rows in the merged entries
    else:
        parts = []
        for index in indexes:
            if isinstance(index, faiss.IndexIVF):
                index.make_direct_map()
            parts.append(index.reconstruct_n(0, index.ntotal))
        x = np.vstack(parts).astype(np.float32)
        if quantizer is not None:
            merged = _add_to_quantizer(quantizer, x)
        else:
            # a merged segment is searched by every later day: IVF as soon as it has enough rows to train
            # one (a flat search costs rows x stored; IVF scans nprobe of about 2 sqrt(stored) lists)
            segment_config = dataclasses.replace(config, index_kind="ivf") if config.index_kind == "auto" else config
            last = pieces[-1].last or pieces[-1].day
            anchor = pieces[0].day == history.first_day and (last - history.first_day).days == _SEGMENT_DAYS - 1
            merged, _ = build_index(x, segment_config, max_lists=config.history_lists if anchor else None)
    path = stem.with_name(stem.name + ".faiss")
    faiss.write_index(merged, str(path))
    fsync_file(path)
    return {"faiss": path}


def search_runs(
    runs: list[Run],
    x: np.ndarray,
    *,
    use_gpu: bool = True,
    nprobe: int = 8,
    assigned: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    min_sim: float = -np.inf,
) -> tuple[np.ndarray, list[str | None], list[str | None]]:
    """Best cosine of each unit row to any row of the earlier days' runs, and its id and day where that
    cosine is at least `min_sim` (one index in memory at a time; a run's ids are read only when it holds
    such a best match). IVF indexes sharing a quantizer reuse one assignment of the rows to lists
    (`assigned`: quantizer digest -> `_assign` result, filled in as quantizers are met)."""
    import faiss

    n = x.shape[0]
    best = np.full(n, -np.inf, dtype=np.float32)
    best_run = np.full(n, -1, dtype=np.int64)
    best_pos = np.zeros(n, dtype=np.int64)
    assigned = {} if assigned is None else assigned
    on_gpu = gpu_count(use_gpu) > 0
    for r, run in enumerate(runs):
        # memory-mapped: a search touches only the lists it scans, and nothing is copied first
        index = faiss.read_index(str(run.sidecars["faiss"]), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        if index.d != x.shape[1]:
            raise ValueError(
                f"semantic history of {run.day} holds {index.d}-d vectors, the rows are {x.shape[1]}-d: "
                "the embedding model changed; point the history at a new folder"
            )
        if isinstance(index, faiss.IndexIVF) and not on_gpu:
            index.nprobe = min(nprobe, index.nlist)
            key = quantizer_digest(index.quantizer)
            if key not in assigned:
                assigned[key] = assign_lists(centroids(index.quantizer), x, index.nprobe)
            sims, pos = index.search_preassigned(x, 1, assigned[key][1], assigned[key][0])
        else:
            index = to_gpus(index, use_gpu=use_gpu, nprobe=nprobe)
            sims, pos = index.search(x, 1)
        del index  # before the next one is read: one index in memory at a time
        better = np.flatnonzero((pos[:, 0] >= 0) & (sims[:, 0] > best))
        best[better] = sims[better, 0]
        best_run[better] = r
        best_pos[better] = pos[better, 0]
    ref_id = np.full(n, None, dtype=object)
    ref_day = np.full(n, None, dtype=object)
    named = (best_run >= 0) & (best >= min_sim)
    for r in np.unique(best_run[named]).tolist():
        rows = np.flatnonzero(named & (best_run == r))
        ids = pl.read_parquet(runs[r].path, columns=["row_id"])["row_id"].to_numpy().astype(object)
        ref_id[rows] = ids[best_pos[rows]]
        ref_day[rows] = runs[r].day.isoformat()
    return best, ref_id.tolist(), ref_day.tolist()


def build_index(x: np.ndarray, config: IndexSettings, max_lists: int | None = None):
    """A new index of `x`; `max_lists`: train a quantizer of up to that many lists (rows/15 at most),
    one meant to be shared by later segments, instead of the 2 sqrt(rows) that suit this index alone.
    A shared quantizer gets more lists than its own rows would balance: the lists it is searched with
    grow with every later day, and its centroids are searched once per day, not once per segment."""
    import faiss

    n, d = x.shape
    use_ivf = config.index_kind == "ivf" or (config.index_kind == "auto" and n >= config.ivf_min_rows)
    # Searching costs ~ rows x stored / nlist, training ~ nlist^2: 2 sqrt(n) lists balance the two.
    # FAISS wants >= 39 training rows per list, which is also all that is sampled.
    if max_lists:
        nlist = min(max_lists, n // _SHARED_ROWS_PER_LIST)
    else:
        nlist = next((m for m in (int(2 * np.sqrt(n)), int(np.sqrt(n))) if n >= 39 * m), 0)
    if not use_ivf or nlist < 2:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index, "flat"
    quantizer = faiss.IndexFlatIP(d)
    # fp16 codes: half the memory and about half the scan time of IVFFlat; cosine error ~1e-4,
    # far below any useful eps (8-bit codes err by ~1e-2, too close to the threshold)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.niter = 10
    index.cp.min_points_per_centroid = min(39, _SHARED_ROWS_PER_LIST) if max_lists else 39
    index.cp.seed = config.seed
    rng = np.random.default_rng(config.seed)
    sample = x[np.sort(rng.choice(n, size=min(n, 39 * nlist), replace=False))]
    index.train(sample)
    index.add(x)
    return index, "ivf"
