"""A day's embedding work, fixed before any of it runs: which texts are encoded, and beside which others.

A vector can depend on its batch: ONNX int8 quantizes each batch with its own scales, and every backend pads
a batch to its longest text. So the batches are planned once for the whole day, on keys every shard agrees
on: the distinct texts the cache does not hold, longest first in the encoder's tokens (`lengths`: a batch then
pads little, and its widths only shrink from one batch to the next, as in one call of the encoder), ties by
text hash, cut into batches of the encoder's batch size. Characters are a poor stand-in for tokens: batches cut
by characters pad the default day's texts to 1.19x their tokens, against 1.01x by tokens. The batches are dealt to the N shards in a snake (so no shard gets the
longest batch of every round), and each is encoded as one call of the encoder (one unit). One shard or many, and a shard run again after a failure, encode the same batches and so get the
same vectors: one code path for N = 1 and N > 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from pipeline.text_hash import raw_text_hashes

BATCHES_SCHEMA = pl.Schema({"text_hash": pl.Utf8, "text": pl.Utf8, "batch": pl.Int64, "shard": pl.Int64})


@dataclass(frozen=True)
class EmbedPlan:
    """`index`: prompt_id and text_hash of every row, in the day's row order; `batches`: the texts to encode
    (text_hash, text, batch, shard), in plan order; `cache_hits`: distinct texts the cache already holds."""

    index: pl.DataFrame
    batches: pl.DataFrame
    n_distinct: int
    cache_hits: int

    @property
    def n_batches(self) -> int:
        return int(self.batches["batch"].max() + 1) if self.batches.height else 0

    def shard(self, shard: int) -> pl.DataFrame:
        """The batches one shard encodes."""
        return self.batches.filter(pl.col("shard") == shard)


def check_shards(shards: int) -> int:
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ValueError(f"`shards`={shards!r} must be an integer >= 1: set it (or FLYWHEEL_SHARDS) to e.g. 1, 2 or 4")
    return shards


def plan_embedding(
    prompt_ids: Sequence[str] | pl.Series,
    texts: Sequence[str | None] | pl.Series,
    cached: Callable[[list[str]], set[str]],
    *,
    batch_size: int,
    shards: int,
    lengths: Callable[[list[str]], Sequence[int]] | None = None,
) -> EmbedPlan:
    """The plan of one day: `cached(hashes)` names the hashes the cache already holds (they are not encoded);
    `lengths(texts)` gives what a batch of them pads to (the encoder's token counts; characters without it),
    asked only of the texts to encode."""
    check_shards(shards)
    if batch_size < 1:
        raise ValueError(f"embedding `batch_size`={batch_size} must be >= 1")
    items = ["" if t is None else str(t) for t in (texts.to_list() if isinstance(texts, pl.Series) else texts)]
    ids = prompt_ids.to_list() if isinstance(prompt_ids, pl.Series) else list(prompt_ids)
    if len(ids) != len(items):
        raise ValueError(f"plan_embedding got {len(ids)} prompt ids and {len(items)} texts: they must align")
    hashes = raw_text_hashes(items)
    index = pl.DataFrame({"prompt_id": ids, "text_hash": hashes}, schema={"prompt_id": pl.Utf8, "text_hash": pl.Utf8})
    distinct = pl.DataFrame({"text_hash": hashes, "text": items}, schema={"text_hash": pl.Utf8, "text": pl.Utf8})
    distinct = distinct.unique("text_hash", keep="any")
    hits = cached(distinct["text_hash"].to_list()) if distinct.height else set()
    todo = distinct.filter(~pl.col("text_hash").is_in(list(hits)))
    if lengths is None:
        todo = todo.with_columns(_len=pl.col("text").str.len_chars().cast(pl.Int64))
    else:
        sizes = list(lengths(todo["text"].to_list())) if todo.height else []
        if len(sizes) != todo.height:
            raise ValueError(f"plan_embedding's lengths gave {len(sizes)} lengths for {todo.height} texts")
        todo = todo.with_columns(_len=pl.Series(sizes, dtype=pl.Int64))
    todo = todo.sort(["_len", "text_hash"], descending=[True, False]).drop("_len")
    batch = pl.int_range(pl.len(), dtype=pl.Int64) // batch_size
    # dealt like cards in a snake (0, 1, .., N-1, N-1, .., 0, 0, ..): batches come longest first, and a plain
    # round would give shard 0 the longest batch of every round
    rank, round_ = pl.col("batch") % shards, pl.col("batch") // shards
    snake = pl.when(round_ % 2 == 0).then(rank).otherwise(shards - 1 - rank)
    todo = todo.with_columns(batch=batch).with_columns(shard=snake)
    return EmbedPlan(index, todo.match_to_schema(BATCHES_SCHEMA), distinct.height, len(hits))


def encode_batches(batches: pl.DataFrame, encode: Callable[[list[str]], np.ndarray], dim: int) -> pl.DataFrame:
    """(text_hash, vector) of every planned text, each batch encoded by one call of `encode`."""
    parts = []
    for (_,), group in batches.group_by("batch", maintain_order=True):
        vectors = np.asarray(encode(group["text"].to_list()), dtype=np.float32).reshape(group.height, dim)
        parts.append(pl.DataFrame({"text_hash": group["text_hash"], "vector": vectors}))
    if not parts:
        return pl.DataFrame(schema={"text_hash": pl.Utf8, "vector": pl.Array(pl.Float32, dim)})
    return pl.concat(parts).with_columns(pl.col("vector").cast(pl.Array(pl.Float32, dim)))
