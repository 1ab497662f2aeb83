"""Near dedup: MinHash variants merged, distinct texts and one conversation's cuts kept, backends, shingles, LSH
recall, settings and the history's sketch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import minhash, schema
from pipeline.dedup_near import NEAR_DUPLICATE, STAGE_NEAR, NearDedupConfig, near_dedup
from pipeline.history import DayChain, HistoryOrderError
from pipeline.text_hash import normalize_text
from tests.pipeline.dedup_frames import D1, D2, near_chain, prompt_frame

# --- near: unit behaviour ---------------------------------------------------------------------------------

BASE = "user: I spent the whole weekend hiking in the mountains with my brother and it was great"


def test_near_dedup_merges_variants_keeps_distinct_and_skips_short() -> None:
    df = prompt_frame(
        [
            ("n2", BASE),
            ("n1", BASE.replace("whole", "hole")),
            ("n3", BASE.replace("hiking", "really hiking")),
            ("n4", "user: my favourite food is definitely pizza with extra cheese and olives"),
            ("n5", "user: hi"),
            ("n6", "user: hi!"),
        ]
    )
    res = near_dedup(df)
    assert res.kept["prompt_id"].to_list() == ["n1", "n4", "n5", "n6"]
    assert res.drops.schema == schema.DROPS
    assert set(res.drops["kept_id"]) == {"n1"} and set(res.drops["reason_code"]) == {NEAR_DUPLICATE}
    assert set(res.drops["stage"]) == {STAGE_NEAR}
    s = res.counters
    assert s.skipped_short == 2 and s.groups == 1 and s.largest_group == 3 and s.near_within == 2
    longest = near_dedup(df, NearDedupConfig(keep="longest"))
    assert set(longest.drops["kept_id"]) == {"n3"}


def test_near_dedup_never_merges_cuts_of_one_conversation() -> None:
    df = prompt_frame([("c1", BASE), ("c2", BASE + " again"), ("c3", BASE + " !")], conversation_id=["k", "k", "z"])
    res = near_dedup(df)
    # c1 and c2 share a conversation, c3 does not: c3 joins the group, c1 and c2 are never merged
    # directly, and chaining through c3 puts all three in one group
    assert res.counters.same_source_pairs == 1
    assert near_dedup(df, NearDedupConfig(same_source_col=None)).counters.same_source_pairs == 0
    alone = df.filter(pl.col("prompt_id") != "c3")
    assert near_dedup(alone).kept.height == 2
    assert near_dedup(alone, NearDedupConfig(same_source_col=None)).kept.height == 1


def test_backends_agree_on_estimates() -> None:
    texts = [
        normalize_text(BASE),
        normalize_text(BASE.replace("brother", "sister")),
        "a completely unrelated sentence about tax forms",
    ]
    true = []
    sets = [minhash.shingles(t, "char", 4) for t in texts]
    for j in (1, 2):
        true.append(len(sets[0] & sets[j]) / len(sets[0] | sets[j]))
    for backend in ("rensa", "datasketch"):
        sig = NearDedupConfig(backend=backend, num_perm=256).signatures(texts)
        est = minhash.estimated_jaccard(sig, np.array([[0, 1], [0, 2]]))
        assert abs(est[0] - true[0]) < 0.1 and est[1] < 0.15, (backend, est, true)


def test_char_shingle_hashes_match_sets() -> None:
    texts = ["abcabcab", "xyz", "abcab"]
    hashes, offsets = minhash.char_shingle_hashes(texts, 3)
    assert offsets.tolist() == [0, 6, 7, 10]
    rows = [set(hashes[offsets[i] : offsets[i + 1]].tolist()) for i in range(3)]
    assert len(rows[0]) == 3  # abc, bca, cab
    assert rows[2] == rows[0]  # same 3-gram set
    assert not rows[1] & rows[0]


def test_lsh_bands_reach_the_recall_target() -> None:
    for t in (0.6, 0.8, 0.9):
        b, r = minhash.lsh_bands(t, 128, 0.99)
        assert b * r <= 128 and 1 - (1 - t**r) ** b >= 0.99
        assert 1 - (1 - t ** (r + 1)) ** (128 // (r + 1)) < 0.99  # and no more rows per band would do


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"threshold": 0.0}, "threshold"),
        ({"num_perm": 8}, "num_perm"),
        ({"shingle": "byte"}, "shingle"),
        ({"shingle_size": 0}, "shingle_size"),
        ({"min_chars": 2}, "min_chars"),
        ({"keep": "random"}, "keep"),
        ({"backend": "faiss"}, "backend"),
        ({"lsh_recall": 1.0}, "lsh_recall"),
        ({"lookback_days": 0}, "lookback_days"),
    ],
)
def test_bad_near_config_names_the_setting(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        NearDedupConfig(**kwargs)


def test_index_from_another_sketch_is_refused(tmp_path: Path) -> None:
    df = prompt_frame([("x1", BASE)], D1)
    near_dedup(df, history=near_chain(tmp_path))
    later = prompt_frame([("y1", BASE + " too")], D2)
    small = NearDedupConfig(num_perm=64)
    with pytest.raises(HistoryOrderError, match="p64"):
        near_dedup(later, small, history=near_chain(tmp_path, small))
    with pytest.raises(ValueError, match="day"):
        near_dedup(later.drop("day"), history=near_chain(tmp_path))
    sketch = NearDedupConfig(backend="datasketch")
    fresh = DayChain(tmp_path / "other", D2, sketch.history_kind())  # a new history starting on day 2
    assert near_dedup(later, sketch, history=fresh).kept.height == 1
