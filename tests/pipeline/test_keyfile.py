"""Sorted key files: lookups equal a brute-force match, and state written by earlier releases still reads."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import keyfile, minhash
from pipeline.dedup_exact import ExactDedupConfig, exact_dedup, seen_before
from pipeline.history import DayChain
from pipeline.text_hash import normalized_text_hashes

D1 = date(2026, 3, 1)


def test_match_finds_every_equal_key_and_nothing_else(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 50, size=(2, 400), dtype=np.uint64)  # many repeated keys
    keyfile.save(tmp_path / "k", stored)
    on_disk = keyfile.load(tmp_path / "k")
    assert isinstance(on_disk, np.memmap) and np.all(np.diff(on_disk[0].astype(np.int64)) >= 0)
    probes = rng.integers(0, 60, size=70, dtype=np.uint64)
    probe, found = keyfile.match(on_disk, probes)
    got = sorted(zip(probe.tolist(), found[0].tolist(), found[1].tolist()))
    want = sorted((i, int(k), int(v)) for i, p in enumerate(probes) for k, v in stored.T if k == p)
    assert got == want and len(want) > 70
    none_probe, none_found = keyfile.match(on_disk, np.array([1000], dtype=np.uint64))
    assert none_probe.size == 0 and none_found.shape == (2, 0)


def test_band_keys_of_an_earlier_release_read_the_same(tmp_path: Path) -> None:
    sig = np.random.default_rng(1).integers(0, 2**32, size=(30, 16), dtype=np.uint32)
    keys = minhash.band_keys(sig, 4, 4)
    minhash.write_keys(tmp_path / "new.keys", sig, 4, 4)
    minhash.keys_frame(keys).sort("key").write_parquet(tmp_path / "old.keys")  # the earlier format
    new, old = minhash.read_keys(tmp_path / "new.keys"), minhash.read_keys(tmp_path / "old.keys")
    probe_keys, probe_bands = keys[5], np.arange(4)
    assert [
        sorted(map(tuple, np.column_stack(minhash.lookup_keys(k, probe_keys, probe_bands)))) for k in (new, old)
    ] == [[(b, 5) for b in range(4)]] * 2


def test_exact_history_without_hash_files_is_still_checked(tmp_path: Path) -> None:
    chain = DayChain(tmp_path, D1, ExactDedupConfig().history_kind())
    # a run as an earlier release committed it: entries only, no hash key file beside them
    hello, new, never = normalized_text_hashes(["hello there", "new", "never"])
    old = pl.DataFrame({"text_hash": [hello], "prompt_id": ["a"], "day": [D1]})
    chain.commit(D1, old)
    d2, d3 = D1 + timedelta(days=1), D1 + timedelta(days=2)
    frame = pl.DataFrame({"prompt_id": ["b", "c"], "text": ["Hello, there!", "new"], "day": [d2, d2]})
    result = exact_dedup(frame, history=chain)
    assert result.drops["row_id"].to_list() == ["b"] and result.counters.exact_cross_day == 1
    # the new day's run has its hash file; both are found, each with the day that kept it
    seen = seen_before([hello, new, never], chain, d3)
    assert dict(seen.iter_rows()) == {hello: D1, new: d2}
