"""Semantic deduplication (SemDeDup: Abbas et al., 2023) of embedded rows, within a day and across days.

Within a day: spherical k-means (FAISS) groups the unit vectors; inside each cluster the rows are
ordered by the keep policy and a row is a duplicate when its cosine to any row before it reaches
``1 - eps`` (SemDeDup's rule: the max over the strictly-lower triangle of the cluster's similarity
matrix). Similarities are computed as matrix products in row blocks, so memory stays bounded and no
Python loop runs over pairs. A dropped row's ``kept_id`` follows its chain of earlier duplicates to
the row that was kept.

Across days: the vectors each day KEPT are committed as that day's run of a ``pipeline.history.DayChain``
(row ids and a hash of each vector, plus a FAISS index of the vectors beside it); a new day's rows
within ``eps`` of any earlier day's kept row are dropped first. A day searches exactly the days before
it (the newest ``lookback_days`` when set), one index (a run, or a segment of up to 32 days) at a time,
so memory holds one segment's index and the result does not depend on the order in which days were
materialized. The first 32-day segment trains a coarse quantizer that every later run and segment
shares (`history_lists`): a day assigns its rows to IVF lists once and each segment only scans those
lists, so adding segments adds no quantizer searches, and segments merge by moving lists.

Why ``eps = 0.05`` (cosine >= 0.95) by default, measured with all-MiniLM-L6-v2: case and punctuation
variants of a sentence score 0.97-0.98 ("I am a student at BYU" / "i am a student at byu."), close
rewordings 0.90-0.93 ("What do you do for fun?" / "What do you like to do for fun?"), and lines that
share words but not meaning 0.66-0.77 ("what is your favorite movie?" / "...book?"). Exact and near-exact
copies are already gone (MinHash dedup runs first), and every semantic drop costs coverage of what users
ask, so the default removes only variants of the same sentence; raise eps towards 0.1 to also remove
rewordings. (SemDeDup's paper uses 0.07-0.3 to thin web-scale pretraining data.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import schema
from pipeline.faiss_gpu import gpu_count, kmeans_gpu_arg, to_gpus
from pipeline.history import Compaction, DayChain, Run, days_covered
from pipeline.step import StepCounters, StepResult

KEEP_POLICIES = ("centroid", "first", "longest")
INDEX_KINDS = ("auto", "flat", "ivf")
REASON = "semantic_duplicate"


@dataclass(frozen=True)
class SemDedupConfig:
    eps: float = field(
        default=0.05,
        metadata={"help": "rows with cosine >= 1 - eps are duplicates; 0.05 removes rewordings, not topics"},
    )
    keep: str = field(
        default="centroid",
        metadata={
            "help": "which row of a duplicate group stays: 'centroid' (closest to the cluster centre, "
            "SemDeDup), 'first' (smallest row id) or 'longest' (longest text)"
        },
    )
    n_clusters: int | None = field(
        default=None,
        metadata={"help": "k-means clusters; None = about sqrt(rows) (one cluster below min_rows_for_kmeans)"},
    )
    min_rows_for_kmeans: int = field(
        default=5000, metadata={"help": "below this many rows all pairs are compared exactly (one cluster)"}
    )
    kmeans_iters: int = field(
        default=10,
        metadata={
            "help": "k-means iterations (clusters only partition the search: near-duplicates land together early)"
        },
    )
    max_points_per_centroid: int = field(
        default=128, metadata={"help": "k-means trains on at most k * this many sampled rows"}
    )
    seed: int = field(default=0, metadata={"help": "k-means seed: same input, same output"})
    cross_day: bool = field(default=True, metadata={"help": "also drop rows that duplicate rows kept on earlier days"})
    lookback_days: int | None = field(
        default=None, metadata={"help": "compare with this many earlier days only; None = all earlier days"}
    )
    index_kind: str = field(
        default="auto",
        metadata={
            "help": "per-day index of kept vectors: 'flat' (exact), 'ivf' (approximate, for millions), "
            "'auto' (ivf from ivf_min_rows)"
        },
    )
    ivf_min_rows: int = field(
        default=20_000,
        metadata={"help": "'auto' switches to IVF from this many kept rows (a flat search costs rows x stored)"},
    )
    ivf_nprobe: int = field(
        default=8, metadata={"help": "IVF lists searched per query (8: 99.9% recall of pairs at cosine 0.96)"}
    )
    history_lists: int = field(
        default=2048,
        metadata={
            "help": "IVF lists of the history's shared coarse quantizer, trained once on the kept rows of the "
            "history's first 32 days (at most rows/15 lists): every later run and segment uses it, so a day "
            "assigns its rows to lists once, whatever the number of segments"
        },
    )
    use_gpu: bool = field(default=True, metadata={"help": "use FAISS GPUs when faiss.get_num_gpus() > 0"})
    block_elements: int = field(
        default=1 << 24, metadata={"help": "similarity entries computed per block (memory: 4 bytes each)"}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"semdedup `eps`={self.eps} must be in [0, 1): duplicates have cosine >= 1 - eps")
        if self.keep not in KEEP_POLICIES:
            raise ValueError(f"semdedup `keep`={self.keep!r} is unknown: use one of {list(KEEP_POLICIES)}")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"semdedup `n_clusters`={self.n_clusters} must be >= 1 or None (automatic)")
        if self.index_kind not in INDEX_KINDS:
            raise ValueError(f"semdedup `index_kind`={self.index_kind!r} is unknown: use one of {list(INDEX_KINDS)}")
        if self.kmeans_iters < 1 or self.max_points_per_centroid < 1 or self.ivf_nprobe < 1:
            raise ValueError("semdedup `kmeans_iters`, `max_points_per_centroid` and `ivf_nprobe` must be >= 1")
        if self.history_lists < 2:
            raise ValueError(f"semdedup `history_lists`={self.history_lists} must be >= 2")
        if self.lookback_days is not None and self.lookback_days < 1:
            raise ValueError(f"semdedup `lookback_days`={self.lookback_days} must be >= 1 or None (all days)")
        if self.block_elements < 1024:
            raise ValueError(f"semdedup `block_elements`={self.block_elements} must be >= 1024")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 C-contiguous rows of unit length; non-finite entries become 0 (a zero row matches nothing)."""
    x = np.nan_to_num(np.asarray(vectors, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (rows x dim), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def spherical_kmeans(
    x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0, max_points_per_centroid: int = 256, use_gpu: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FAISS spherical k-means on unit rows: (unit centroids k x d, assignment n, cosine to own centroid n)."""
    import faiss

    n, d = x.shape
    k = max(1, min(int(k), n))
    if k == 1:
        c = x.mean(axis=0, keepdims=True)
        c /= max(float(np.linalg.norm(c)), 1e-12)
        return c.astype(np.float32), np.zeros(n, dtype=np.int64), (x @ c[0]).astype(np.float32)
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=seed,
        spherical=True,
        verbose=False,
        max_points_per_centroid=max_points_per_centroid,
        gpu=kmeans_gpu_arg(use_gpu),
    )
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    index = to_gpus(faiss.IndexFlatIP(d), use_gpu=use_gpu)
    index.add(centroids)
    sims, assign = index.search(x, 1)
    return centroids, assign[:, 0].astype(np.int64), sims[:, 0].astype(np.float32)


def auto_clusters(n: int, config: SemDedupConfig) -> int:
    if config.n_clusters is not None:
        return min(config.n_clusters, max(n, 1))
    if n < config.min_rows_for_kmeans:
        return 1
    return max(1, int(round(np.sqrt(n))))


def _duplicate_parents(x: np.ndarray, order: np.ndarray, bounds: np.ndarray, threshold: float, block: int):
    """For rows in `order` (grouped by cluster at `bounds`), the earlier row each duplicates (-1 = none)
    and that cosine: the max over the strictly-lower triangle of each cluster's similarity matrix.

    Clusters run in parallel threads, each with single-threaded BLAS: most clusters are a few
    hundred rows, where multi-threaded BLAS spends more time handing work out than computing
    (5-10x slower measured on 2 shared cores). Threads write disjoint rows of the outputs.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    parent = np.full(n, -1, dtype=np.int64)
    best = np.zeros(n, dtype=np.float32)

    def one_cluster(s: int, e: int) -> None:
        m = e - s
        idx = order[s:e]
        xc = x[idx]
        rows_per_block = max(1, min(m, block // m))
        for a in range(0, m, rows_per_block):
            b = min(m, a + rows_per_block)
            sims = xc[a:b] @ xc[:b].T
            # only rows earlier in keep order count: zero the diagonal and above (0 < threshold)
            sims[:, a:b] = np.tril(sims[:, a:b], -1)
            j = sims.argmax(axis=1)
            top = sims[np.arange(b - a), j]
            hit = top >= threshold
            parent[idx[a:b][hit]] = idx[j[hit]]
            best[idx[a:b]] = top

    spans = [(int(s), int(e)) for s, e in zip(bounds[:-1], bounds[1:]) if e - s > 1]
    spans.sort(key=lambda se: se[0] - se[1])  # largest first: the pool ends evenly
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for future in [pool.submit(one_cluster, s, e) for s, e in spans]:
            future.result()
    return parent, best


def _roots(parent: np.ndarray) -> np.ndarray:
    """The kept row at the end of each duplicate chain (a kept row is its own root)."""
    root = np.where(parent >= 0, parent, np.arange(parent.size))
    while True:  # pointer jumping: chains halve each pass
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


@dataclass(frozen=True)
class SemanticCounters(StepCounters):
    dropped_earlier_days: int
    dropped_within_day: int
    n_clusters: int
    largest_cluster: int
    history_days: int

    @property
    def dup_rate(self) -> float:
        return 1 - self.rows_kept / self.rows_in if self.rows_in else 0.0


def history_kind(space: str | int) -> str:
    """Runs hold unit vectors of one embedding space (a model id, or a dimension): another cannot be searched."""
    return f"semantic|unit-f32|{space}"


def _keep_key(config: SemDedupConfig, ids: list[str], texts, sims: np.ndarray) -> np.ndarray:
    if config.keep == "centroid":
        return -sims.astype(np.float64)
    if config.keep == "longest":
        if texts is None:
            raise ValueError("semdedup `keep`='longest' needs the texts: pass texts=")
        return -np.array([len(t or "") for t in texts], dtype=np.float64)
    return np.zeros(len(ids))  # 'first': the id rank (the tie-breaker) decides alone


def semantic_dedup(
    ids: Sequence[str] | pl.Series,
    vectors: np.ndarray,
    config: SemDedupConfig | None = None,
    *,
    day: date,
    texts: Sequence[str | None] | pl.Series | None = None,
    history: DayChain | None = None,
    stage: str = "semdedup",
) -> StepResult[SemanticCounters]:
    """Drop semantic duplicates of one day's rows; with `history`, also of rows kept on earlier days,
    and commit this day's kept rows there (replacing an earlier run of the same day).

    `kept` holds (row_id, cluster_id) of the kept rows, in input order."""
    config = config or SemDedupConfig()
    ids = [str(i) for i in (ids.to_list() if isinstance(ids, pl.Series) else ids)]
    texts = texts.to_list() if isinstance(texts, pl.Series) else texts
    if len(ids) != len(vectors) or (texts is not None and len(texts) != len(ids)):
        raise ValueError(
            f"semantic_dedup got {len(ids)} ids, {len(vectors)} vectors and "
            f"{'no' if texts is None else len(texts)} texts: they must align"
        )
    if len(set(ids)) != len(ids):
        raise ValueError("semantic_dedup needs unique row ids (kept_id must name one row)")
    n = len(ids)
    x = unit_rows(vectors) if n else np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 1), np.float32)
    threshold = 1.0 - config.eps
    drops: list[dict] = []
    dropped = np.zeros(n, dtype=bool)

    prev_dups, runs = 0, []
    # rows assigned to the shared quantizer's lists once: for the search and for this day's own index
    assigned: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    quantizer = _shared_quantizer(history, config, _compaction(config, history), day) if history is not None and n else None
    if quantizer is not None:
        assigned[_digest(quantizer)] = _assign(_centroids(quantizer), x, config.ivf_nprobe)
    if history is not None and config.cross_day:
        runs = history.runs(day, config.lookback_days, _compaction(config, history))
    if runs and n:
        sims, ref_ids, ref_days = search_runs(
            runs, x, use_gpu=config.use_gpu, nprobe=config.ivf_nprobe, assigned=assigned, min_sim=threshold
        )
        for i in np.flatnonzero(sims >= threshold):
            dropped[i] = True
            drops.append(
                dict(
                    row_id=ids[i],
                    kept_id=ref_ids[i],
                    detail=f"cosine {sims[i]:.4f} >= {threshold:.4f} to a row kept on {ref_days[i]}",
                )
            )
        prev_dups = int(dropped.sum())

    # within the day, among rows no earlier day claimed
    live = np.flatnonzero(~dropped)
    cluster = np.full(n, -1, dtype=np.int64)
    k = auto_clusters(live.size, config) if live.size else 0
    within = 0
    if live.size:
        xl = x[live]
        _, assign, csims = spherical_kmeans(
            xl,
            k,
            niter=config.kmeans_iters,
            seed=config.seed,
            max_points_per_centroid=config.max_points_per_centroid,
            use_gpu=config.use_gpu,
        )
        cluster[live] = assign
    if live.size > 1:
        live_ids = [ids[i] for i in live]
        id_rank = pl.Series(live_ids).rank("ordinal").to_numpy()
        key = _keep_key(config, live_ids, None if texts is None else [texts[i] for i in live], csims)
        order = np.lexsort((id_rank, key, assign))  # by cluster, then keep policy, then id
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(assign[order])) + 1, [live.size]])
        parent, best = _duplicate_parents(xl, order, bounds, threshold, config.block_elements)
        root = _roots(parent)
        for j in np.flatnonzero(parent >= 0):
            i = live[j]
            dropped[i] = True
            via = "" if root[j] == parent[j] else f" (via {ids[live[parent[j]]]})"
            drops.append(
                dict(
                    row_id=ids[i],
                    kept_id=ids[live[root[j]]],
                    detail=f"cosine {best[j]:.4f} >= {threshold:.4f} in cluster {assign[j]}{via}",
                )
            )
        within = int((parent >= 0).sum())

    kept_rows = np.flatnonzero(~dropped)
    if history is not None:
        lists = next(iter(assigned.values()))[1][kept_rows, 0] if assigned else None
        commit_run(history, day, [ids[i] for i in kept_rows], x[kept_rows], config, lists=lists)
    drops_df = schema.drops_frame([{"day": day, "stage": stage, "reason_code": REASON, **d} for d in drops])
    kept = pl.DataFrame(
        {"row_id": [ids[i] for i in kept_rows], "cluster_id": cluster[kept_rows]},
        schema={"row_id": pl.Utf8, "cluster_id": pl.Int64},
    )
    sizes = np.bincount(cluster[live], minlength=max(k, 1)) if live.size else np.zeros(0, np.int64)
    counters = SemanticCounters(
        rows_in=n,
        rows_kept=int(kept_rows.size),
        dropped_earlier_days=prev_dups,
        dropped_within_day=within,
        n_clusters=int(k),
        largest_cluster=int(sizes.max()) if sizes.size else 0,
        history_days=days_covered(runs),
    )
    return StepResult(kept=kept, drops=drops_df, counters=counters)


def commit_run(
    history: DayChain,
    day: date,
    ids: list[str],
    x: np.ndarray,
    config: SemDedupConfig,
    lists: np.ndarray | None = None,
) -> None:
    """A day's kept vectors as its run: row ids with a hash of each vector (so the run's content hash
    changes when the vectors do) and of the shared quantizer its index uses, and the FAISS index of
    the vectors beside it. `lists`: each row's nearest list of the shared quantizer, when known."""
    import faiss

    compaction = _compaction(config, history)
    quantizer = _shared_quantizer(history, config, compaction, day) if len(ids) else None
    entries = pl.DataFrame(
        {
            "row_id": pl.Series(ids, dtype=pl.Utf8),
            "vector_hash": [hashlib.blake2b(v.tobytes(), digest_size=8).hexdigest() for v in x],
        }
    )
    if quantizer is not None:  # the index depends on the quantizer too: another one must name a new run
        entries = entries.with_columns(quantizer=pl.lit(_digest(quantizer)))

    def write_index(path: Path) -> None:
        index = _build_index(x, config)[0] if quantizer is None else _add_to_quantizer(quantizer, x, lists)
        faiss.write_index(index, str(path))

    history.commit(day, entries, sidecars={"faiss": write_index} if len(ids) else None, compaction=compaction)


# Segments hold at most 32 days: a search holds one segment's index in memory at a time. The first
# block of 32 days also trains the quantizer that every later run and segment shares.
_SEGMENT_DAYS = 32
# training rows per list of the shared quantizer: fewer than FAISS's 39 (it warns), so that the first
# month can train enough lists for the years after it
_SHARED_ROWS_PER_LIST = 15


def _compaction(config: SemDedupConfig, history: DayChain) -> Compaction:
    return Compaction(max_block_days=_SEGMENT_DAYS, merge_sidecars=partial(_merge_indexes, config, history))


def _shared_quantizer(history: DayChain, config: SemDedupConfig, compaction: Compaction, day: date):
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


def _centroids(quantizer) -> np.ndarray:
    """A copy of a flat quantizer's centroids (nlist x d)."""
    import faiss

    flat = faiss.downcast_index(quantizer)
    return np.array(faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d)).reshape(flat.ntotal, flat.d)


def _digest(quantizer) -> str:
    """Which coarse quantizer an IVF index uses, so rows are assigned to lists once per quantizer. A
    sample of the centroids identifies a trained quantizer as well as all of them, at a tenth of the cost."""
    import faiss

    flat = faiss.downcast_index(quantizer)
    c = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    return hashlib.blake2b(np.ascontiguousarray(c[:, ::10]).tobytes(), digest_size=16).hexdigest() + f"-{c.shape}"


def _assign(centroids: np.ndarray, x: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, lists) of each row's `k` nearest lists, best first: a BLAS product per block of rows,
    several times faster than a flat FAISS search of the centroids (measured on 2 cores)."""
    k = min(k, len(centroids))
    sims = np.empty((len(x), k), dtype=np.float32)
    lists = np.empty((len(x), k), dtype=np.int64)
    for s in range(0, len(x), block):
        all_sims = x[s : s + block] @ centroids.T
        top = np.argpartition(-all_sims, k - 1, axis=1)[:, :k] if k < len(centroids) else None
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
    lists = np.ascontiguousarray(_assign(_centroids(quantizer), x, 1)[1][:, 0] if lists is None else lists, np.int64)
    index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(lists))
    return index


def _merge_indexes(
    config: SemDedupConfig, history: DayChain, pieces: list[Run], offsets: list[int], stem: Path
) -> dict[str, Path]:
    """One FAISS index over merged runs. After the first 32 days the pieces share the history's
    quantizer and their lists are moved into one index; otherwise the vectors are re-indexed (IVF once
    there are enough of them; the first 32-day segment trains the shared quantizer with as many lists
    as its rows allow)."""
    import faiss

    quantizer = _shared_quantizer(history, config, _compaction(config, history), pieces[0].day)
    indexes = [faiss.read_index(str(p.sidecars["faiss"])) for p in pieces]
    if quantizer is not None and all(
        isinstance(i, faiss.IndexIVF) and _digest(i.quantizer) == _digest(quantizer) for i in indexes
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
            merged, _ = _build_index(x, segment_config, max_lists=config.history_lists if anchor else None)
    path = stem.with_name(stem.name + ".faiss")
    faiss.write_index(merged, str(path))
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
            key = _digest(index.quantizer)
            if key not in assigned:
                assigned[key] = _assign(_centroids(index.quantizer), x, index.nprobe)
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


def _build_index(x: np.ndarray, config: SemDedupConfig, max_lists: int | None = None):
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
