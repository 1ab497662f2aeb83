"""Semantic dedup: planted near-duplicates found, keep policies, kept ids, cross-day memory, reruns."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from pipeline import schema
from pipeline.history import DayChain
from pipeline.semdedup import SemDedupConfig, history_kind, semantic_dedup, spherical_kmeans, unit_rows

D1, D2, D3 = date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)


def clustered(n: int, d: int = 64, topics: int = 20, seed: int = 0) -> np.ndarray:
    """Rows around topic centres, distinct from each other (pairwise cosine well below 0.95)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((topics, d)))
    return unit_rows(centres[rng.integers(0, topics, n)] + unit_rows(rng.standard_normal((n, d))))


def near_copies(x: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit_rows(x + noise * unit_rows(rng.standard_normal(x.shape)))


@pytest.fixture()
def planted():
    base = clustered(3000)
    src = np.arange(0, 3000, 10)  # 300 rows get a near copy (cosine ~0.995)
    x = np.vstack([base, near_copies(base[src], 0.1, seed=1)])
    ids = [f"b{i:05d}" for i in range(3000)] + [f"c{i:05d}" for i in src]
    return ids, x, src


def test_planted_near_duplicates_are_dropped_and_nothing_else(planted):
    ids, x, src = planted
    cfg = SemDedupConfig(n_clusters=12, min_rows_for_kmeans=0)  # force the k-means path
    res = semantic_dedup(ids, x, cfg, day=D1)
    assert res.counters.n_clusters == 12 and res.counters.dropped_within_day == 300
    drops = schema.conform(res.drops, schema.DROPS)
    assert set(drops["reason_code"]) == {"semantic_duplicate"} and set(drops["stage"]) == {"semdedup"}
    # each pair loses exactly one member, and kept_id names its partner
    pairs = {f"b{i:05d}": f"c{i:05d}" for i in src}
    pairs.update({v: k for k, v in pairs.items()})
    assert all(pairs[r] == k for r, k in zip(drops["row_id"], drops["kept_id"]))
    kept = set(res.kept["row_id"])
    assert len(kept) == 3000 and set(drops["kept_id"]) <= kept and not kept & set(drops["row_id"])
    assert res.kept.height == 3000


def test_result_does_not_depend_on_block_size(planted):
    ids, x, _ = planted
    a = semantic_dedup(ids, x, SemDedupConfig(n_clusters=4), day=D1)
    b = semantic_dedup(ids, x, SemDedupConfig(n_clusters=4, block_elements=1024), day=D1)  # many row blocks
    # the same pairs; cosines may differ in the last float digit (another summation order)
    assert a.drops.height > 250
    assert a.drops.sort("row_id").select("row_id", "kept_id").equals(b.drops.sort("row_id").select("row_id", "kept_id"))


def test_keep_policies():
    rng = np.random.default_rng(3)
    centre = unit_rows(rng.standard_normal((1, 32)))
    group = near_copies(np.repeat(centre, 3, axis=0), 0.2, seed=4)  # 3 mutual near-duplicates
    others = clustered(40, d=32, seed=5)
    x = np.vstack([group, others])
    ids = ["m", "k", "z"] + [f"o{i}" for i in range(40)]
    texts = ["short", "a much longer text", "mid text"] + ["x"] * 40
    cfg = dict(n_clusters=1, eps=0.1)

    def kept_of_group(keep):
        res = semantic_dedup(ids, x, SemDedupConfig(keep=keep, **cfg), day=D1, texts=texts)
        g = res.drops.filter(pl.col("row_id").is_in(ids[:3]))
        assert g.height == 2 and g["kept_id"].n_unique() == 1
        return g["kept_id"][0]

    assert kept_of_group("first") == "k"
    assert kept_of_group("longest") == "k"
    closest = ids[int(np.argmax(group @ unit_rows(x.mean(axis=0, keepdims=True))[0]))]
    assert kept_of_group("centroid") == closest
    with pytest.raises(ValueError, match="texts"):
        semantic_dedup(ids, x, SemDedupConfig(keep="longest"), day=D1)


def test_chains_resolve_to_a_kept_row():
    # a -> b -> c drift: b is within eps of a and of c, but c is not of a
    a = np.zeros(8, np.float32)
    a[0] = 1
    b = unit_rows(np.array([[1, 0.25, 0, 0, 0, 0, 0, 0]], np.float32))[0]
    c = unit_rows(np.array([[1, 0.5, 0, 0, 0, 0, 0, 0]], np.float32))[0]
    assert b @ a > 0.95 and b @ c > 0.95 and c @ a < 0.95
    res = semantic_dedup(["a", "b", "c"], np.stack([a, b, c]), SemDedupConfig(keep="first"), day=D1)
    # SemDeDup's rule: c duplicates b (earlier), so it goes even though b goes too; both point at a
    assert dict(zip(res.drops["row_id"], res.drops["kept_id"])) == {"b": "a", "c": "a"}
    assert "via b" in res.drops.filter(pl.col("row_id") == "c")["detail"][0]


def test_cross_day_drops_rows_kept_earlier_and_reruns_are_stable(tmp_path):
    hist = DayChain(tmp_path / "semindex", D1, history_kind(64))
    cfg = SemDedupConfig()
    day1 = clustered(500, seed=10)
    ids1 = [f"d1-{i}" for i in range(500)]
    r1 = semantic_dedup(ids1, day1, cfg, day=D1, history=hist)
    assert r1.drops.height == 0 and hist.committed_days() == [D1]

    fresh = clustered(200, seed=11)
    repeats = near_copies(day1[:50], 0.1, seed=12)
    ids2 = [f"d2-{i}" for i in range(250)]
    x2 = np.vstack([fresh, repeats])
    r2 = semantic_dedup(ids2, x2, cfg, day=D2, history=hist)
    assert r2.counters.dropped_earlier_days == 50
    got = dict(zip(r2.drops["row_id"], r2.drops["kept_id"]))
    assert got == {f"d2-{200 + i}": f"d1-{i}" for i in range(50)}
    assert all("2024-05-01" in d for d in r2.drops["detail"])

    # re-running day 2 does not match its own stored rows; the result is identical
    again = semantic_dedup(ids2, x2, cfg, day=D2, history=hist)
    assert again.drops.equals(r2.drops) and again.kept.equals(r2.kept)
    # re-running day 1 ignores the later day, and its entry is replaced, not duplicated
    r1b = semantic_dedup(ids1, day1, cfg, day=D1, history=hist)
    assert r1b.drops.height == 0
    assert sorted(p.name[:14] for p in (tmp_path / "semindex").glob("run-*.faiss")) == [
        "run-2024-05-01",
        "run-2024-05-02",
    ]
    assert hist.committed_days() == [D1, D2] and hist.manifest(D2)["rows"] == 200

    # day 3 matches rows that day 2 kept, not rows day 2 dropped (those were never stored)
    r3 = semantic_dedup(["x", "y"], np.vstack([near_copies(fresh[:1], 0.05, 13), day1[:1]]), cfg, day=D3, history=hist)
    assert dict(zip(r3.drops["row_id"], r3.drops["kept_id"])) == {"x": "d2-0", "y": "d1-0"}
    # a look-back window of one day no longer sees day 1
    r3w = semantic_dedup(
        ["y"],
        day1[:1],
        SemDedupConfig(lookback_days=1),
        day=D3,
        history=DayChain(tmp_path / "semindex", D1, history_kind(64)),
    )
    assert r3w.drops.height == 0


def test_ivf_index_for_large_days(tmp_path):
    import faiss

    hist = DayChain(tmp_path, D1, history_kind(64))
    x = clustered(4000, seed=20)
    cfg = SemDedupConfig(index_kind="ivf")
    semantic_dedup([f"a{i}" for i in range(4000)], x, cfg, day=D1, history=hist)
    assert isinstance(faiss.read_index(str(hist.runs(D2)[0].sidecars["faiss"])), faiss.IndexIVF)
    res = semantic_dedup([f"b{i}" for i in range(100)], near_copies(x[:100], 0.1, 21), cfg, day=D2, history=hist)
    assert res.counters.dropped_earlier_days >= 95  # approximate search: nearly all found


def test_real_embeddings_drop_variants_not_different_questions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from pipeline.embed import embed_texts
    from pipeline.embed_config import EmbedConfig

    texts = [
        "I am a student at BYU",
        "i am a student at byu.",
        "I love dogs",
        "I love cats",
        "what is your favorite movie?",
        "what is your favorite book?",
    ]
    v = embed_texts(texts, EmbedConfig(model_dir=str(tmp_path), progress=False))
    res = semantic_dedup([f"t{i}" for i in range(6)], v, day=D1, texts=texts)
    assert dict(zip(res.drops["row_id"], res.drops["kept_id"])) in ({"t1": "t0"}, {"t0": "t1"})


def test_bad_inputs_and_config():
    with pytest.raises(ValueError, match="eps"):
        SemDedupConfig(eps=1.5)
    with pytest.raises(ValueError, match="keep"):
        SemDedupConfig(keep="random")
    with pytest.raises(ValueError, match="index_kind"):
        SemDedupConfig(index_kind="hnsw")
    with pytest.raises(ValueError, match="align"):
        semantic_dedup(["a"], np.zeros((2, 4)), day=D1)
    with pytest.raises(ValueError, match="unique"):
        semantic_dedup(["a", "a"], np.eye(2), day=D1)
    # broken vectors do not crash the run: a NaN row matches nothing and is kept
    x = np.eye(3, dtype=np.float32)
    x[1] = np.nan
    res = semantic_dedup(["a", "b", "c"], x, day=D1)
    assert res.drops.height == 0 and res.kept.height == 3
    empty = semantic_dedup([], np.zeros((0, 4)), day=D1)
    assert empty.kept.height == 0 and empty.drops.schema == schema.DROPS


def test_spherical_kmeans_is_seeded():
    x = clustered(2000, topics=5, seed=30)
    c1, a1, s1 = spherical_kmeans(x, 5, seed=7)
    c2, a2, s2 = spherical_kmeans(x, 5, seed=7)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(np.linalg.norm(c1, axis=1), 1.0, atol=1e-5)
    assert np.all(s1 <= 1.0001) and len(np.unique(a1)) == 5


def test_compacted_ivf_segments_still_find_earlier_days(tmp_path):
    hist = DayChain(tmp_path, D1, history_kind(64))
    cfg = SemDedupConfig(index_kind="ivf")
    days = [D1, D2, D3]
    xs = [clustered(2000, seed=40 + i) for i in range(3)]
    for d, x in zip(days, xs):
        semantic_dedup([f"{d}-{i}" for i in range(2000)], x, cfg, day=d, history=hist)
    d4 = date(2024, 5, 4)
    probe = np.vstack([near_copies(xs[0][:50], 0.1, 41), near_copies(xs[2][:50], 0.1, 42)])
    res = semantic_dedup([f"p{i}" for i in range(100)], probe, cfg, day=d4, history=hist)
    # days 1-2 are read as one merged segment, day 3 as its own run
    assert len(list(tmp_path.glob("seg-2024-05-01-2024-05-02-*.faiss"))) == 1
    assert res.counters.history_days == 3 and res.counters.dropped_earlier_days >= 95


def test_any_order_of_the_same_rows_gives_the_same_result(planted, tmp_path):
    ids, x, _ = planted
    cfg = SemDedupConfig(n_clusters=12, min_rows_for_kmeans=0, max_points_per_centroid=40)  # k-means samples rows
    runs = []
    for name, perm in [("given", np.arange(len(ids))), ("shuffled", np.random.default_rng(5).permutation(len(ids)))]:
        history = DayChain(tmp_path / name, D1, history_kind(x.shape[1]))
        res = semantic_dedup([ids[i] for i in perm], x[perm], cfg, day=D1, history=history)
        assert res.kept["row_id"].to_list() == [ids[i] for i in perm if ids[i] in set(res.kept["row_id"])]
        stored = (tmp_path / name).rglob("*.parquet")
        runs.append((res, {p.relative_to(tmp_path / name): p.read_bytes() for p in stored}))
    (a, stored_a), (b, stored_b) = runs
    assert a.drops.equals(b.drops) and a.counters == b.counters
    assert a.kept.sort("row_id").equals(b.kept.sort("row_id"))
    assert stored_a == stored_b
