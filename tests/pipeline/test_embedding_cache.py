"""The embedding cache's key index: lookups that read only what they find, merges, old caches, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline import embedding_cache
from pipeline.crash import ENV as CRASH_ENV
from pipeline.embedding_cache import MERGE_FANIN, EmbeddingCache
from pipeline.text_hash import raw_text_hashes

DIM = 8
REPO = Path(__file__).resolve().parents[2]


def frame(lo: int, hi: int) -> pl.DataFrame:
    hashes = raw_text_hashes([f"t{i}" for i in range(lo, hi)])
    return pl.DataFrame({"text_hash": hashes, "vector": vectors(lo, hi)})


def vectors(lo: int, hi: int) -> np.ndarray:
    return np.arange(lo * DIM, hi * DIM, dtype=np.float32).reshape(-1, DIM)


def hashes_of(*ids: int) -> list[str]:
    return raw_text_hashes([f"t{i}" for i in ids])


def by_hash(found: pl.DataFrame) -> dict[str, np.ndarray]:
    return dict(zip(found["text_hash"].to_list(), found["vector"].to_numpy()))


def test_lookup_reads_only_the_parts_that_hold_hits(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path, "toy|onnx-int8-pertext")
    for day in range(12):
        cache.add(frame(day * 100, day * 100 + 100))
    opened: list[str] = []
    real = embedding_cache._read_rows
    monkeypatch.setattr(embedding_cache, "_read_rows", lambda path, *a: opened.append(path.name) or real(path, *a))
    import pyarrow.parquet as pq

    scans: list[str] = []
    real_read = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: scans.append(str(a[0])) or real_read(*a, **k))
    got = by_hash(cache.lookup([*hashes_of(305, 399, 5000, 7000), "not-a-hash"]))
    assert set(got) == set(hashes_of(305, 399))
    np.testing.assert_array_equal(got[hashes_of(399)[0]], vectors(399, 400)[0])
    assert len(opened) == 1 and not scans  # one part read (its row groups with hits), no hash column scanned
    assert cache.lookup(hashes_of(5000)).height == 0
    assert cache.lookup([]).height == 0


def test_key_files_merge_so_their_count_grows_with_the_log_of_the_history(tmp_path):
    cache = EmbeddingCache(tmp_path, "toy|torch")
    counts = []
    for day in range(40):
        cache.add(frame(day * 500, day * 500 + 500))
        counts.append(cache.index_files())
    assert max(counts) <= 2 * (MERGE_FANIN - 1) + 1
    assert len(list(cache.index_dir.glob("keys-*.npy"))) == counts[-1]  # merged-away files are gone
    want = hashes_of(0, 4999, 19_999, 12_345)
    got = by_hash(cache.lookup(want))
    assert set(got) == set(want)
    np.testing.assert_array_equal(got[want[2]], vectors(19_999, 20_000)[0])
    assert cache.count() == 20_000


def test_a_text_stored_twice_is_returned_once(tmp_path):
    cache = EmbeddingCache(tmp_path, "toy|torch")
    cache.add(frame(0, 60))
    cache.add(frame(50, 100))  # a concurrent writer embedded 50..59 too
    got = cache.lookup(hashes_of(*range(100)))
    assert got.height == 100 and got["text_hash"].n_unique() == 100


def test_a_cache_written_before_the_index_is_read_and_indexed_once(tmp_path):
    old = EmbeddingCache(tmp_path, "toy|torch")
    old.dir.mkdir(parents=True)
    for k in range(3):  # the parts-only layout: Parquet parts, no index folder
        part = frame(k * 10, k * 10 + 10).with_columns(model_id=pl.lit(old.model_id))
        part.with_columns(pl.col("vector").cast(pl.Array(pl.Float32, DIM))).write_parquet(old.dir / f"part-{k}.parquet")
    cache = EmbeddingCache(tmp_path, "toy|torch")
    assert not cache.index_dir.exists()
    got = by_hash(cache.lookup(hashes_of(3, 17, 29, 99)))
    assert set(got) == set(hashes_of(3, 17, 29))
    np.testing.assert_array_equal(got[hashes_of(17)[0]], vectors(17, 18)[0])
    assert cache.index_files() == 1
    cache.add(frame(30, 40))
    assert set(by_hash(cache.lookup(hashes_of(5, 35)))) == set(hashes_of(5, 35))


def test_a_part_left_unindexed_by_a_crash_is_indexed_by_the_next_writer(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path, "toy|torch")
    cache.add(frame(0, 10))

    def crash(*_a, **_k):
        raise KeyboardInterrupt("killed between the part and its index")

    monkeypatch.setattr(cache, "_index_unlisted", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.add(frame(10, 20))
    monkeypatch.undo()
    assert len(cache.files()) == 2
    assert cache.lookup(hashes_of(15)).height == 0  # not indexed: a miss, re-embedded, never a wrong vector
    cache.add(frame(20, 30))
    assert set(by_hash(cache.lookup(hashes_of(5, 15, 25)))) == set(hashes_of(5, 15, 25))


def test_concurrent_writers_are_all_indexed(tmp_path):
    cache = EmbeddingCache(tmp_path, "toy|torch")
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for k in range(6):
                lo = (w * 6 + k) * 50
                EmbeddingCache(tmp_path, "toy|torch").add(frame(lo, lo + 50))
        except BaseException as e:  # noqa: BLE001  (reported by the assertion below)
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert cache.lookup(hashes_of(*range(1200))).height == 1200


def test_bad_input_is_refused_naming_the_fix(tmp_path):
    cache = EmbeddingCache(tmp_path, "toy|torch")
    with pytest.raises(ValueError, match="raw_text_hashes"):
        cache.add(pl.DataFrame({"text_hash": ["h1"], "vector": [[0.0] * DIM]}))
    cache.add(frame(0, 5), part="day-1")
    with pytest.raises(ValueError, match="never rewritten"):
        cache.add(frame(5, 10), part="day-1")
    with pytest.raises(ValueError, match="text_hash and vector"):
        cache.add(pl.DataFrame({"vector": [[0.0] * DIM]}))


@pytest.mark.parametrize("point", ["embedding_cache_part", "embedding_cache_index"])
def test_a_writer_killed_mid_add_leaves_a_cache_the_next_writer_repairs(tmp_path, point):
    cache = EmbeddingCache(tmp_path, "toy|torch")
    cache.add(frame(0, 10))
    child = f"""
import polars as pl, numpy as np
from pipeline.embedding_cache import EmbeddingCache
from pipeline.text_hash import raw_text_hashes
h = raw_text_hashes([f"t{{i}}" for i in range(10, 20)])
v = np.arange(80, 160, dtype=np.float32).reshape(-1, {DIM})
EmbeddingCache({str(tmp_path)!r}, "toy|torch").add(pl.DataFrame({{"text_hash": h, "vector": v}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), CRASH_ENV: f"{point}:1"}
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert set(by_hash(cache.lookup(hashes_of(5, 15)))) == set(hashes_of(5))  # the old index, whole
    cache.add(frame(20, 30))
    got = by_hash(cache.lookup(hashes_of(5, 15, 25)))
    assert set(got) == set(hashes_of(5, 15, 25))
    np.testing.assert_array_equal(got[hashes_of(15)[0]], vectors(15, 16)[0])
    listed = {e["file"] for e in json.loads((cache.index_dir / "manifest.json").read_text())["indexes"]}
    assert {p.name for p in cache.index_dir.glob("keys-*.npy")} == listed  # no key file left behind


def test_a_reader_whose_key_file_was_merged_away_reads_the_manifest_again(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path, "toy|torch")
    cache.add(frame(0, 10))
    real, calls = cache._probe, []

    def merged_meanwhile(manifest, words):
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError("keys-gone.npy")
        return real(manifest, words)

    monkeypatch.setattr(cache, "_probe", merged_meanwhile)
    assert cache.lookup(hashes_of(3)).height == 1 and len(calls) == 2


def test_key_files_stop_merging_at_the_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(embedding_cache, "MAX_MERGED_ROWS", 1300)
    cache = EmbeddingCache(tmp_path, "toy|torch")
    for day in range(12):
        cache.add(frame(day * 300, day * 300 + 300))
    rows = sorted(e["rows"] for e in json.loads((cache.index_dir / "manifest.json").read_text())["indexes"])
    # four files of 300 merge; a merged file and three more would pass the cap, so the next four small ones merge
    assert rows == [1200, 1200, 1200]
    assert cache.lookup(hashes_of(*range(0, 3600, 7))).height == len(range(0, 3600, 7))
