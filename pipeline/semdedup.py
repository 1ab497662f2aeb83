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

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from pipeline import schema
from pipeline.faiss_gpu import kmeans_gpu_arg, to_gpus
from pipeline.history import DayChain, days_covered
from pipeline.row_order import id_order, is_id_ordered
from pipeline.semindex import (
    assign_lists,
    centroids,
    commit_run,
    quantizer_digest,
    search_runs,
    segment_compaction,
    shared_quantizer,
)
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

    `kept` holds (row_id, cluster_id) of the kept rows, in input order; nothing depends on that order."""
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
    order = id_order(ids)
    if not is_id_ordered(order):
        # k-means samples and seeds by position, and the history stores rows in the order given: run on the
        # rows in their global order, so any order of the same rows (a shuffled read, collected shards) gives
        # the same drops, clusters and history
        res = semantic_dedup(
            [ids[i] for i in order],
            np.asarray(vectors)[order],
            config,
            day=day,
            texts=None if texts is None else [texts[i] for i in order],
            history=history,
            stage=stage,
        )
        position = {row: i for i, row in enumerate(ids)}
        kept = res.kept.sort(pl.col("row_id").replace_strict(position, return_dtype=pl.Int64))
        return StepResult(kept=kept, drops=res.drops, counters=res.counters)
    n = len(ids)
    x = unit_rows(vectors) if n else np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 1), np.float32)
    threshold = 1.0 - config.eps
    drops: list[dict] = []
    dropped = np.zeros(n, dtype=bool)

    prev_dups, runs = 0, []
    # the day's rows are assigned to the shared quantizer's lists once: for the search and for its own index
    quantizer, assigned = None, {}
    if history is not None and n:
        quantizer = shared_quantizer(history, config, segment_compaction(config, history), day)
    if quantizer is not None:
        assigned[quantizer_digest(quantizer)] = assign_lists(centroids(quantizer), x, config.ivf_nprobe)
    if history is not None and config.cross_day:
        runs = history.runs(day, config.lookback_days, segment_compaction(config, history))
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
        lists = assigned[quantizer_digest(quantizer)][1][kept_rows, 0] if quantizer is not None else None
        commit_run(history, day, [ids[i] for i in kept_rows], x[kept_rows], config, quantizer=quantizer, lists=lists)
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
