"""The day's embedding batch plan: every number of shards encodes the same batches, so gets the same vectors."""

import numpy as np
import polars as pl
import pytest

from pipeline.batch_plan import encode_batches, plan_embedding
from pipeline.text_hash import raw_text_hashes


def batch_dependent(texts: list[str]) -> np.ndarray:
    """An encoder whose vectors depend on their batch, as int8 quantization's per-batch scales make them."""
    own = np.array([[len(t), sum(map(ord, t)) % 97] for t in texts], dtype=np.float32)
    return own + own.mean(axis=0, keepdims=True)


TEXTS = [f"message {i} " + "word " * (i % 7) for i in range(50)] + ["message 3 word word word "] * 3


def _vectors(order: np.ndarray, shards: int, cached: set[str] = frozenset()) -> tuple[pl.DataFrame, pl.DataFrame]:
    texts = [TEXTS[i] for i in order]
    plan = plan_embedding([f"p{i}" for i in order], texts, lambda hs: cached & set(hs), batch_size=8, shards=shards)
    parts = [encode_batches(plan.shard(s), batch_dependent, 2) for s in range(shards)]
    return plan.index, pl.concat(parts).sort("text_hash")


def test_any_shard_count_and_row_order_gives_the_same_vectors():
    _, one = _vectors(np.arange(len(TEXTS)), 1)
    assert one.height == len(set(TEXTS)) and one["text_hash"].n_unique() == one.height
    for shards, seed in [(2, 0), (3, 1), (4, 2), (7, 3)]:
        index, many = _vectors(np.random.default_rng(seed).permutation(len(TEXTS)), shards)
        assert many.equals(one), shards
        assert sorted(index["prompt_id"]) == sorted(f"p{i}" for i in range(len(TEXTS)))


def test_batches_follow_a_global_order_and_cached_texts_are_not_encoded():
    cached = set(raw_text_hashes(TEXTS[:10]))
    plan = plan_embedding(
        [f"p{i}" for i in range(len(TEXTS))], TEXTS, lambda hs: cached & set(hs), batch_size=4, shards=3
    )
    assert plan.cache_hits == 10 and plan.batches.height == plan.n_distinct - 10
    lengths = plan.batches["text"].str.len_chars().to_list()
    assert lengths == sorted(lengths, reverse=True)  # longest first: a batch pads little
    assert plan.batches.group_by("batch").len()["len"].max() <= 4
    shards = plan.batches.unique("batch").sort("batch")["shard"].to_list()
    assert shards[:9] == [0, 1, 2, 2, 1, 0, 0, 1, 2]  # dealt in a snake: longest batches spread evenly


def test_bad_settings_fail_fast_naming_them():
    with pytest.raises(ValueError, match="`shards`=0"):
        plan_embedding(["a"], ["x"], lambda hs: set(), batch_size=8, shards=0)
    with pytest.raises(ValueError, match="batch_size"):
        plan_embedding(["a"], ["x"], lambda hs: set(), batch_size=0, shards=1)


def test_batches_are_cut_by_the_lengths_given_not_by_characters():
    """A batch pads to its longest text in the encoder's tokens: the plan sorts by the `lengths` it is given
    (here the reverse of the characters' order), so each batch holds texts of neighbouring lengths and the widths
    only shrink from one batch to the next."""
    texts = [f"t{i:02d} " + "x" * i for i in range(40)]
    tokens = {t: 100 - i for i, t in enumerate(texts)}  # the shortest in characters is the longest in tokens
    plan = plan_embedding(
        [f"p{i}" for i in range(len(texts))],
        texts,
        lambda hs: set(),
        batch_size=8,
        shards=2,
        lengths=lambda ts: [tokens[t] for t in ts],
    )
    planned = [tokens[t] for t in plan.batches["text"].to_list()]
    assert planned == sorted(tokens.values(), reverse=True)
    widths = [max(tokens[t] for t in g["text"]) for _, g in plan.batches.group_by("batch", maintain_order=True)]
    assert widths == sorted(widths, reverse=True)
    with pytest.raises(ValueError, match="lengths"):
        plan_embedding(["a", "b"], ["x", "y"], lambda hs: set(), batch_size=8, shards=1, lengths=lambda ts: [1])
