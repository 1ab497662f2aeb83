import multiprocessing as mp
import os
import threading
import time
from datetime import date, timedelta

import polars as pl
import pytest

from pipeline import lake as lake_mod
from pipeline.lake import Lake, Partition


def frame(day: date, n: int = 5) -> pl.DataFrame:
    return pl.DataFrame({"x": list(range(n)), "day": [day] * n})


def test_write_read_and_views(tmp_path):
    lake = Lake(tmp_path)
    d = date(2026, 1, 3)
    lake.write("t", d, frame(d))
    assert lake.read("t", d).height == 5
    assert lake.days("t") == [d]
    assert lake.query("SELECT count(*) AS n FROM t")["n"][0] == 5
    import duckdb

    con = duckdb.connect(str(lake.catalog_path), read_only=True)
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 5
    con.close()


def test_rewrite_replaces_partition_with_identical_content(tmp_path):
    lake = Lake(tmp_path)
    d = date(2026, 1, 3)
    lake.write("t", d, frame(d, 10), part="part-0")
    lake.write("t", d, frame(d, 10), part="part-1", replace=False)
    assert lake.read("t", d).height == 20
    p = lake.write("t", d, frame(d, 10))
    first = p.read_bytes()
    assert lake.read("t", d).height == 10  # the extra part is gone: re-running replaces
    p = lake.write("t", d, frame(d, 10))
    assert p.read_bytes() == first
    assert [f.name for f in lake.files("t", d)] == ["part-0.parquet"]


def test_crash_during_write_keeps_old_partition(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    d = date(2026, 1, 3)
    lake.write("t", d, frame(d, 3))

    def boom(self, path, *a, **k):
        path = str(path)
        with open(path, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError):
        lake.write("t", d, frame(d, 7))
    monkeypatch.undo()
    assert lake.read("t", d).height == 3
    assert not [p for p in lake.partition_dir("t", d).iterdir() if p.name.startswith(".")]


def test_bad_names_are_refused(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(ValueError):
        lake.write("Bad-Table", date(2026, 1, 1), frame(date(2026, 1, 1)))
    with pytest.raises(ValueError):
        Partition("generation", "../escape")


def test_missing_partition_error_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize"):
        Lake(tmp_path).read("t", date(2026, 1, 1))


def _writer(home: str, start: int, n: int) -> None:
    lake = Lake(home)
    for i in range(n):
        d = date(2026, 1, 1) + timedelta(days=start + i)
        lake.write("t", d, frame(d, 50))
        lake.write(f"u{start}", d, frame(d, 1))  # new tables force catalog writes from both processes
        lake.refresh_catalog()
        assert lake.query("SELECT count(*) AS n FROM t")["n"][0] >= 50


def test_concurrent_partitions_do_not_corrupt_or_lock_each_other(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k * 100, 8)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    lake = Lake(tmp_path)
    assert lake.query("SELECT count(*) AS n FROM t")["n"][0] == 16 * 50
    import duckdb

    con = duckdb.connect(str(lake.catalog_path), read_only=True)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    con.close()
    assert {"t", "u0", "u100"} <= views


def _hold_catalog(path: str, ready, release) -> None:
    import duckdb

    con = duckdb.connect(path)  # e.g. a person's DuckDB CLI session on the catalog
    ready.set()
    release.wait(30)
    con.close()


def test_catalog_held_by_another_process_does_not_fail_writes(tmp_path):
    lake = Lake(tmp_path)
    d = date(2026, 1, 1)
    lake.write("t", d, frame(d))
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_catalog, args=(str(lake.catalog_path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        assert lake.refresh_catalog(timeout_s=0.5) is False
        lake.write("v", d, frame(d))  # the data write succeeds although the catalog is held
        assert lake.read("v", d).height == 5
        assert lake.query("SELECT count(*) AS n FROM v")["n"][0] == 5
    finally:
        release.set()
        holder.join(60)
    assert lake.refresh_catalog()


def test_default_home_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(lake_mod.HOME_ENV, str(tmp_path / "h"))
    assert Lake().home == tmp_path / "h"


def test_previous_day(tmp_path):
    lake = Lake(tmp_path)
    for i, n in ((1, 3), (3, 7)):
        d = date(2026, 1, i)
        lake.write("t", d, frame(d, n))
    assert lake.previous_day("t", date(2026, 1, 5)) == date(2026, 1, 3)
    assert lake.previous_day("t", date(2026, 1, 3)) == date(2026, 1, 1)
    assert lake.previous_day("t", date(2026, 1, 1)) is None


def test_a_replacing_write_removes_its_own_leftovers_but_not_a_write_in_flight(tmp_path):
    lake = Lake(tmp_path)
    d = date(2026, 1, 3)
    pdir = lake.partition_dir("t", d)
    pdir.mkdir(parents=True)
    killed = pdir / ".part-0.parquet.tmp-dead"  # of a write of this part killed before its rename
    in_flight = pdir / ".part-1.parquet.tmp-live"  # of another part, being written now
    old = pdir / ".part-2.parquet.tmp-old"  # of another part, killed long ago
    for p in (killed, in_flight, old):
        p.write_bytes(b"half")
    long_ago = time.time() - 2 * lake_mod.STALE_TEMP_S
    os.utime(old, (long_ago, long_ago))
    lake.write("t", d, frame(d))
    assert not killed.exists() and not old.exists() and in_flight.exists()


def test_two_writers_of_one_partition_at_once_leave_one_clean_partition(tmp_path):
    lake = Lake(tmp_path)
    d = date(2026, 1, 3)
    errors: list[BaseException] = []

    def write():
        try:
            for _ in range(5):
                Lake(tmp_path).write("t", d, frame(d, 1000))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in lake.partition_dir("t", d).iterdir()] == ["part-0.parquet"]
    assert lake.read("t", d).equals(frame(d, 1000))
