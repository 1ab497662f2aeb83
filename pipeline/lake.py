"""The lake: Parquet partitions under FLYWHEEL_HOME, and a DuckDB catalog of views over them.

Layout: ``<home>/lake/<table>/<key>=<value>/part-<n>.parquet``; daily tables use ``day=YYYY-MM-DD``,
per-generation tables ``generation=<name>``. Every file carries its partition column too, so readers
never need hive parsing and a file moved elsewhere still says what it is.

Writes are atomic and durable: a file is written beside its target under a temporary name, flushed to
disk and renamed over the target (rename is atomic on POSIX), then the folder is flushed, so a crash or
a power loss leaves either the old partition or the new one, never half of one. One writer of a
partition at a time (`pipeline.locks`). Re-writing a partition replaces it: parts that the new write did not
produce are removed after the new ones are in place.

DuckDB allows one read-write process per database file. Queries therefore never touch
``catalog.duckdb``: they run on an in-memory connection with views over the Parquet globs, so any
number of partitions can be materialized and queried at once. The catalog file exists for people
(open it with the DuckDB CLI or any client) and is refreshed under an inter-process file lock, with
retries, only when a table appears; since its views are globs, new partitions need no refresh.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
from filelock import FileLock, Timeout

from pipeline.crash import crash_point
from pipeline.durable import fsync_dir, fsync_tree
from pipeline.locks import writer_lock

log = logging.getLogger(__name__)

HOME_ENV = "FLYWHEEL_HOME"
DEFAULT_HOME = "data"
_TABLE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# a temp file of another part this old is the leftover of a killed write, not one in flight
STALE_TEMP_S = 3600.0


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


@contextmanager
def _committed(path: Path, crash: str | None = None) -> Iterator[Path]:
    """A unique temporary name in `path`'s folder to write; once written, the file is fsynced, renamed over
    `path` and the folder fsynced, so a crash leaves the old file or the new one, never a part of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if crash is not None:
            crash_point(crash)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    with _committed(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(path: Path, df: pl.DataFrame, row_group_size: int | None = None) -> Path:
    with _committed(path, crash="parquet") as tmp:
        # statistics make DuckDB and polars skip row groups on filters (e.g. hashes of earlier days)
        df.write_parquet(tmp, compression="zstd", statistics=True, row_group_size=row_group_size)
    return path


def _age_s(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class Partition:
    key: str
    value: str

    @classmethod
    def day(cls, day: date | str) -> Partition:
        return cls("day", day.isoformat() if isinstance(day, date) else date.fromisoformat(day).isoformat())

    @classmethod
    def generation(cls, name: str) -> Partition:
        return cls("generation", name)

    def __post_init__(self) -> None:
        if not _TABLE_RE.match(self.key) or not _VALUE_RE.match(self.value):
            raise ValueError(f"bad partition {self.key}={self.value!r}: use letters, digits, '_', '-', '.'")

    @property
    def dirname(self) -> str:
        return f"{self.key}={self.value}"


PartitionLike = Partition | date | str


def _as_partition(p: PartitionLike) -> Partition:
    if isinstance(p, Partition):
        return p
    return Partition.day(p)


class Lake:
    """Parquet tables under ``<home>/lake`` with atomic, replacing partition writes."""

    def __init__(self, home: Path | str | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.root = self.home / "lake"
        self.catalog_path = self.home / "catalog.duckdb"

    # ---- paths -------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        if not _TABLE_RE.match(table):
            raise ValueError(f"bad table name {table!r}: use lower-case letters, digits and '_'")
        return self.root / table

    def partition_dir(self, table: str, partition: PartitionLike) -> Path:
        return self.table_dir(table) / _as_partition(partition).dirname

    def files(self, table: str, partition: PartitionLike | None = None) -> list[Path]:
        base = self.partition_dir(table, partition) if partition is not None else self.table_dir(table)
        pattern = "*.parquet" if partition is not None else "*/*.parquet"
        return sorted(p for p in base.glob(pattern) if not p.name.startswith("."))

    # ---- writes ------------------------------------------------------------------------------
    def write(
        self,
        table: str,
        partition: PartitionLike,
        df: pl.DataFrame,
        *,
        part: str = "part-0",
        replace: bool = True,
    ) -> Path:
        """Write one part of a partition atomically.

        With `replace` (the default) the partition ends up holding exactly this part: other parts
        are removed after the new one is in place. Parallel writers of one partition each pass
        their own `part` and `replace=False`.
        """
        if not re.match(r"^[A-Za-z0-9_\-]+$", part):
            raise ValueError(f"bad part name {part!r}")
        pdir = self.partition_dir(table, partition)
        # one writer of a partition at a time: a second run of the same step and day waits here
        with writer_lock(self.home, f"lake.{table}", _as_partition(partition).dirname):
            path = atomic_write_parquet(pdir / f"{part}.parquet", df)
            if replace:
                for other in pdir.glob("*.parquet"):
                    if other != path:
                        other.unlink(missing_ok=True)
            # temp files of a write of this part that was killed before its rename (under the lock, no
            # write of this part is in flight), and old ones of other parts
            now = time.time()
            for stale in pdir.glob(".*.tmp-*"):
                if stale.name.startswith(f".{part}.parquet.tmp-") or _age_s(stale, now) > STALE_TEMP_S:
                    stale.unlink(missing_ok=True)
            fsync_dir(pdir)
        self._register(table)
        return path

    # ---- reads -------------------------------------------------------------------------------
    def exists(self, table: str, partition: PartitionLike | None = None) -> bool:
        return bool(self.files(table, partition))

    def partitions(self, table: str) -> list[str]:
        """Values of the table's partitions that hold data, sorted."""
        tdir = self.table_dir(table)
        if not tdir.is_dir():
            return []
        return sorted(
            d.name.split("=", 1)[1] for d in tdir.iterdir() if d.is_dir() and "=" in d.name and any(d.glob("*.parquet"))
        )

    def days(self, table: str) -> list[date]:
        return [date.fromisoformat(v) for v in self.partitions(table)]

    def previous_day(self, table: str, day: date) -> date | None:
        """The latest day before `day` that the table holds, if any."""
        earlier = [d for d in self.days(table) if d < day]
        return earlier[-1] if earlier else None

    def read(self, table: str, partition: PartitionLike, schema: pl.Schema | None = None) -> pl.DataFrame:
        files = self.files(table, partition)
        if not files:
            raise FileNotFoundError(
                f"lake table {table!r} has no partition {_as_partition(partition).dirname} under {self.root}: "
                "materialize it first"
            )
        df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
        return df.select(schema.names()) if schema is not None else df

    def scan(self, table: str, partitions: list[PartitionLike] | None = None) -> pl.LazyFrame:
        """Lazy scan of a table, or of some of its partitions; an empty frame when none exist."""
        if partitions is None:
            files = self.files(table)
        else:
            files = [f for p in partitions for f in self.files(table, p)]
        if not files:
            return pl.LazyFrame()
        return pl.scan_parquet(files, hive_partitioning=False, missing_columns="insert", extra_columns="ignore")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per lake table (concurrency-safe)."""
        con = duckdb.connect(":memory:")
        for table in self.tables():
            con.execute(f"CREATE VIEW {table} AS {self._view_sql(table)}")
        return con

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        con = self.connect()
        try:
            # a relation (not a DB-API cursor) hands polars its Arrow batches without a copy
            return con.sql(sql, params=params).pl()
        finally:
            con.close()

    def tables(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            d.name for d in self.root.iterdir() if d.is_dir() and _TABLE_RE.match(d.name) and self.files(d.name)
        )

    # ---- catalog -----------------------------------------------------------------------------
    def _view_sql(self, table: str) -> str:
        glob = (self.table_dir(table).resolve() / "*" / "*.parquet").as_posix().replace("'", "''")
        return f"SELECT * FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false)"

    def _register(self, table: str) -> None:
        marker = self.home / ".catalog" / table
        if marker.exists() and self.catalog_path.exists():
            return
        if self.refresh_catalog(tables=[table], timeout_s=5.0):
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()

    def refresh_catalog(self, tables: list[str] | None = None, timeout_s: float = 30.0) -> bool:
        """(Re)create catalog views; returns False (and logs) if the catalog stayed locked.

        A person holding the catalog open in another client must not fail a pipeline run: the
        lake is the source of truth and the views can be refreshed on any later write.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        tables = tables if tables is not None else self.tables()
        deadline = time.monotonic() + timeout_s
        lock = FileLock(str(self.catalog_path) + ".lock")
        try:
            with lock.acquire(timeout=timeout_s):
                while True:
                    try:
                        con = duckdb.connect(str(self.catalog_path))
                        break
                    except duckdb.IOException as e:  # held by a process outside our lock
                        if time.monotonic() > deadline:
                            log.warning("catalog %s stayed locked (%s); views not refreshed", self.catalog_path, e)
                            return False
                        time.sleep(0.2)
                try:
                    for table in tables:
                        if self.files(table):
                            con.execute(f"CREATE OR REPLACE VIEW {table} AS {self._view_sql(table)}")
                finally:
                    con.close()
        except Timeout:
            log.warning("catalog lock %s.lock not acquired in %ss; views not refreshed", self.catalog_path, timeout_s)
            return False
        return True


def replace_dir(src: Path, dst: Path) -> Path:
    """Move a fully written folder `src` into place as `dst`, replacing what was there.

    `src` is made durable first (fsync of every file and folder). The old folder is renamed aside, the
    new one renamed in, and only then the old one removed: at every moment one whole copy exists under
    `dst` or under `.<dst>.old-*`. A crash between the two renames leaves `dst` missing and the old copy
    aside; the next `replace_dir` or `staging_dir` of `dst` (`recover_dir`) puts it back.
    """
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(dst)
    fsync_tree(src)
    # names sort by time: the newest copy aside is the one to restore
    old = dst.with_name(f".{dst.name}.old-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}")
    if dst.exists():
        os.replace(dst, old)
        fsync_dir(dst.parent)
        crash_point("swap")
    os.replace(src, dst)
    fsync_dir(dst.parent)
    shutil.rmtree(old, ignore_errors=True)
    return dst


def recover_dir(dst: Path) -> Path | None:
    """Finish a `replace_dir` of `dst` that a crash cut short: with `dst` missing, the newest copy set aside
    goes back in place; with `dst` in place, the copies aside are removed. Returns the restored copy's old
    name, if any."""
    import shutil

    aside = sorted(dst.parent.glob(f".{dst.name}.old-*"))
    restored = None
    if not dst.exists() and aside:
        restored = aside.pop()
        os.replace(restored, dst)
        fsync_dir(dst.parent)
        log.warning("%s was missing after an interrupted replace: restored the previous copy", dst)
    if dst.exists():
        for stale in aside:
            shutil.rmtree(stale, ignore_errors=True)
    return restored


def staging_dir(dst: Path) -> Path:
    """A fresh temporary folder beside `dst` (same file system, so `replace_dir` is a rename)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(dst)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    return tmp
