"""The embedding stage: vectors for texts in order, each distinct text encoded once per model.

Configured by `EmbedConfig` (`pipeline.embed_config`), encoded by `Embedder` (`pipeline.embedder`), and
kept in `EmbeddingCache` (`pipeline.embedding_cache`), so a text embedded on an earlier day is looked up,
not encoded again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from pipeline.embed_config import EmbedConfig
from pipeline.embedder import Embedder, get_embedder
from pipeline.embedding_cache import EmbeddingCache
from pipeline.text_hash import raw_text_hashes


@dataclass
class EmbedStats:
    model_id: str
    dim: int
    n_texts: int
    n_missing_text: int
    n_distinct: int
    cache_hits: int
    encoded: int
    seconds_lookup: float
    seconds_encode: float
    seconds_total: float

    def as_metadata(self) -> dict:
        d = asdict(self)
        d["texts_per_second_encoded"] = round(self.encoded / self.seconds_encode, 1) if self.seconds_encode else None
        return d


def embed_with_stats(
    texts: Sequence[str | None] | pl.Series,
    config: EmbedConfig | None = None,
    cache: EmbeddingCache | None = None,
    *,
    embedder: Embedder | None = None,
    part: str | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for `texts` in order (n x dim float32, unit length) and what it took.

    Each distinct text is encoded at most once per call, and not at all when `cache` holds it; new
    vectors are added to `cache` as one part (named `part`, or a fresh unique name).
    """
    t0 = time.perf_counter()
    config = config or (embedder.config if embedder is not None else EmbedConfig())
    embedder = embedder or get_embedder(config)
    if cache is not None and cache.model_id != embedder.model_id:
        raise ValueError(
            f"embedding cache holds model id {cache.model_id!r} but the embedder is {embedder.model_id!r}: "
            "open the cache with EmbeddingCache(root, config.model_id)"
        )
    items = texts.to_list() if isinstance(texts, pl.Series) else list(texts)
    n_missing = sum(t is None for t in items)
    items = ["" if t is None else str(t) for t in items]
    hashes = raw_text_hashes(items)
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    distinct = list(first)
    found: dict[str, int] = {}
    vectors = np.zeros((len(distinct), embedder.dim), dtype=np.float32)
    slot = {h: k for k, h in enumerate(distinct)}
    if cache is not None:
        hit = cache.lookup(distinct)
        if hit.height:
            hv = hit["vector"].to_numpy()
            if hv.shape[1] != embedder.dim:
                raise ValueError(
                    f"embedding cache {cache.dir} holds {hv.shape[1]}-d vectors, the model makes {embedder.dim}-d"
                )
            idx = np.array([slot[h] for h in hit["text_hash"].to_list()])
            vectors[idx] = hv
            found = {h: 1 for h in hit["text_hash"].to_list()}
    t1 = time.perf_counter()
    misses = [h for h in distinct if h not in found]
    if misses:
        new = embedder.encode([items[first[h]] for h in misses])
        vectors[[slot[h] for h in misses]] = new
        if cache is not None:
            cache.add(
                pl.DataFrame(
                    {"text_hash": misses, "vector": new},
                    schema_overrides={"vector": pl.Array(pl.Float32, embedder.dim)},
                ),
                part=part,
            )
    t2 = time.perf_counter()
    out = vectors[[slot[h] for h in hashes]] if hashes else np.zeros((0, embedder.dim), np.float32)
    stats = EmbedStats(
        model_id=embedder.model_id,
        dim=embedder.dim,
        n_texts=len(items),
        n_missing_text=n_missing,
        n_distinct=len(distinct),
        cache_hits=len(found),
        encoded=len(misses),
        seconds_lookup=round(t1 - t0, 3),
        seconds_encode=round(t2 - t1, 3),
        seconds_total=round(time.perf_counter() - t0, 3),
    )
    return out, stats


def embed_texts(
    texts: Sequence[str | None] | pl.Series,
    config: EmbedConfig | None = None,
    cache: EmbeddingCache | None = None,
    *,
    embedder: Embedder | None = None,
) -> np.ndarray:
    """Vectors for `texts` in order (n x dim float32, unit length), embedding only cache misses."""
    return embed_with_stats(texts, config, cache, embedder=embedder)[0]
