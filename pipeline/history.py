"""Cross-day state of a dedup step: one immutable run per day, chained day by day.

A cross-day step (exact, near and semantic dedup) decides day D against what the days before D
kept. Each day commits a *run*: the entries it kept (hashes, MinHash signatures and band keys, or
vectors), written once under a content-addressed name, plus a small manifest ``day=D.json`` that
names the run and chains it to the previous day's manifest::

    chain(D) = digest(chain(D - 1), run_hash(D))      (`pipeline.digest`)

Why a chain and not "whatever days are on disk": a day's result must not depend on the order in
which days were materialized. Day D refuses to run until day D - 1 has committed (unless D is the
first day of the history), so a backfill in any order or concurrency either runs the days in order
or fails loudly naming the missing days; it never dedups against a partial history.

Re-running an earlier day with a different outcome changes its chain hash: every later manifest
is then marked stale (naming the day that changed), and a stale day refuses to serve as the base of
the next one until it is re-materialized. A re-run with the same outcome changes nothing.

Cost per day: a step reads the runs of the days in its lookback window one file at a time (sorted
key files it binary-searches, or one index at a time; never the whole history into memory at once),
and writes one run. Commits are atomic and durable:
the run is written first under a fresh name, then the manifest is replaced (rename), then the old
run of that day is removed; a crash leaves the old state or the new one. Every file is flushed to disk
before the rename that commits it, and a file found in place is reused only when whole.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.crash import crash_point
from pipeline.digest import digest, file_digest
from pipeline.durable import durable_replace, is_complete
from pipeline.lake import atomic_write_parquet, atomic_write_text
from pipeline.locks import writer_lock

_GENESIS = "0" * 32


class HistoryOrderError(RuntimeError):
    """A day was asked to run before the days it depends on were committed (or after they changed)."""


@dataclass(frozen=True)
class Run:
    """What earlier days kept: entries (`path`, Parquet) and derived files (`sidecars`) of the days
    `day` .. `last` (one day's run, or a compacted segment of several)."""

    day: date
    path: Path
    rows: int
    sidecars: dict[str, Path] = field(default_factory=dict)
    last: date | None = None


@dataclass(frozen=True)
class Compaction:
    """How a step's runs are merged into segments.

    The days of the history are grouped into aligned blocks of 1, 2, 4, ... `max_block_days` days
    (a binary counter over the days since the first one): a reader of day D uses the largest blocks
    that fit its window, so it opens O(log D) segments, not D runs. A segment is built from its two
    halves when its last day commits (so each entry is merged O(log) times over its life, and a reader
    only opens files; a reader still builds a missing one) and named by the chain hash of its last
    day: a re-run earlier day changes that hash, and the stale segment is never used.
    `merge_sidecars(pieces, offsets, stem)` writes the step's derived files for the merged entries
    (`offsets[i]`: row of piece i in the merged entries) and returns them by suffix.
    """

    max_block_days: int = 32  # bounds the memory of a merge (it reads the block's entries)
    merge_sidecars: Callable[[list[Run], list[int], Path], dict[str, Path]] | None = None
    row_group_size: int | None = None


def _chain(parent: str, run_hash: str) -> str:
    # A parent is read as an opaque string, so a history recorded with an earlier hash format goes on growing;
    # re-running one of its days gives a new run hash, and marks the days after it stale once.
    return digest(parent, run_hash)


class DayChain:
    """The committed runs of one step under `root`; `first_day` starts the history (nothing before it)."""

    def __init__(self, root: Path | str, first_day: date, kind: str, lock_home: Path | str | None = None):
        self.root = Path(root)
        self.first_day = first_day
        self.kind = kind  # what the entries are (e.g. a sketch id): runs of another kind are refused
        # where the lock that makes one commit of a day at a time lives (`pipeline.locks`); None: the
        # caller runs one writer of the history at a time
        self.lock_home = Path(lock_home) if lock_home is not None else None

    # ---- manifests ---------------------------------------------------------------------------
    def _manifest_path(self, day: date) -> Path:
        return self.root / f"day={day.isoformat()}.json"

    def manifest(self, day: date) -> dict | None:
        path = self._manifest_path(day)
        return json.loads(path.read_text()) if path.is_file() else None

    def committed_days(self) -> list[date]:
        if not self.root.is_dir():
            return []
        return sorted(date.fromisoformat(p.stem.split("=", 1)[1]) for p in self.root.glob("day=*.json"))

    def parent_chain(self, day: date) -> str:
        """The chain hash a run of `day` builds on; raises when the days before it are not in place."""
        if day < self.first_day:
            raise HistoryOrderError(
                f"{day} is before the first day of the {self.root.name} history ({self.first_day}): "
                "set the history start earlier to process it"
            )
        if day == self.first_day:
            return _GENESIS
        prev = day - timedelta(days=1)
        man = self.manifest(prev)
        if man is None:
            missing = [d for d in _days(self.first_day, prev) if self.manifest(d) is None]
            shown = ", ".join(d.isoformat() for d in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise HistoryOrderError(
                f"{self.root.name} of {day} needs every earlier day of its history committed first; missing: "
                f"{shown} ({len(missing)} days). Materialize them in order (a backfill orders them itself)."
            )
        if man.get("kind") != self.kind:
            raise HistoryOrderError(
                f"{self.root.name} of {prev} was built as {man.get('kind')!r}, this run builds {self.kind!r}: "
                "the settings changed; re-materialize the history from its first day, or use a fresh state folder"
            )
        if man.get("stale_since"):
            raise HistoryOrderError(
                f"{self.root.name} of {prev} is stale: it was built before {man['stale_since']} was re-materialized "
                f"with a different result. Re-materialize {prev} (and the days after it) first."
            )
        return man["chain"]

    def stale_days(self) -> list[date]:
        """Committed days built on an earlier state that has since changed: re-materialize them."""
        return [d for d in self.committed_days() if (self.manifest(d) or {}).get("stale_since")]

    def runs(self, day: date, lookback_days: int | None = None, compaction: Compaction | None = None) -> list[Run]:
        """The runs `day` is decided against: the committed days before it, the newest `lookback_days` only
        when given; with `compaction`, as O(log) compacted segments. Raises `HistoryOrderError` when the
        day before is missing or stale."""
        self.parent_chain(day)
        start = self.first_day if not lookback_days else max(self.first_day, day - timedelta(days=lookback_days))
        end = day - timedelta(days=1)
        if end < start:
            return []
        if compaction is None:
            pieces = [self._day_run(d) for d in _days(start, end)]
        else:
            pieces = [self._block(a, b, compaction) for a, b in self._blocks(start, end, compaction.max_block_days)]
        return [p for p in pieces if p is not None and p.rows]

    def segment(self, first: date, last: date, compaction: Compaction) -> Run | None:
        """The compacted segment of the aligned block `first`..`last` as chained now (built when missing)."""
        return self._block(first, last, compaction)

    def _day_run(self, d: date) -> Run | None:
        man = self.manifest(d)
        if man is None:  # cannot happen after the order check unless a manifest was deleted by hand
            raise HistoryOrderError(f"{self.root.name} of {d} is missing: re-materialize it")
        sidecars = {k: self.root / v for k, v in man.get("sidecars", {}).items()}
        return Run(day=d, path=self.root / man["run"], rows=man["rows"], sidecars=sidecars, last=d)

    def _blocks(self, start: date, end: date, max_days: int) -> list[tuple[date, date]]:
        """[start, end] as aligned blocks (a block of 2^k days starts at a multiple of 2^k since first_day)."""
        s, e = (start - self.first_day).days, (end - self.first_day).days
        out = []
        while s <= e:
            size = 1
            while size * 2 <= max_days and s % (size * 2) == 0 and s + size * 2 - 1 <= e:
                size *= 2
            out.append((self.first_day + timedelta(days=s), self.first_day + timedelta(days=s + size - 1)))
            s += size
        return out

    def _block_ending(self, day: date, max_days: int) -> tuple[date, date]:
        """The largest aligned block whose last day is `day` (the one day alone when none is larger)."""
        s = (day - self.first_day).days
        size = 1
        while size * 2 <= max_days and (s + 1) % (size * 2) == 0:
            size *= 2
        return day - timedelta(days=size - 1), day

    def _block(self, a: date, b: date, compaction: Compaction) -> Run | None:
        if a == b:
            return self._day_run(a)
        last = self.manifest(b)
        if last is None:
            raise HistoryOrderError(f"{self.root.name} of {b} is missing: re-materialize it")
        stem = f"seg-{a.isoformat()}-{b.isoformat()}-{last['chain'][:16]}"
        meta = self.root / f"{stem}.json"
        if meta.is_file():
            man = json.loads(meta.read_text())
            sidecars = {k: self.root / v for k, v in man["sidecars"].items()}
            return Run(day=a, path=self.root / man["run"], rows=man["rows"], sidecars=sidecars, last=b)
        half = a + timedelta(days=((b - a).days + 1) // 2)
        pieces = [
            p
            for p in (self._block(a, half - timedelta(days=1), compaction), self._block(half, b, compaction))
            if p and p.rows
        ]
        rows = sum(p.rows for p in pieces)
        run = self.root / f"{stem}.parquet"
        sidecars: dict[str, Path] = {}
        if rows:
            merged = pl.concat([pl.read_parquet(p.path) for p in pieces], how="vertical_relaxed")
            atomic_write_parquet(run, merged, row_group_size=compaction.row_group_size)
            del merged
            crash_point("segment")
            if compaction.merge_sidecars is not None:
                offsets = [0, *np.cumsum([p.rows for p in pieces])[:-1].tolist()]
                # a fresh temp name per build: two readers may build the same missing segment at once
                scratch = self.root / f".{stem}.pending-{uuid.uuid4().hex[:12]}"
                sidecars = compaction.merge_sidecars(pieces, offsets, scratch)
                for suffix, path in list(sidecars.items()):
                    target = self.root / f"{stem}.{suffix}"
                    durable_replace(path, target)
                    sidecars[suffix] = target
        man = {"run": run.name, "rows": rows, "sidecars": {k: v.name for k, v in sidecars.items()}}
        atomic_write_text(meta, json.dumps(man, sort_keys=True))
        for old in self.root.glob(f"seg-{a.isoformat()}-{b.isoformat()}-*"):
            if not old.name.startswith(stem):
                old.unlink(missing_ok=True)
        return Run(day=a, path=run, rows=rows, sidecars=sidecars, last=b)

    # ---- commit ------------------------------------------------------------------------------
    def commit(
        self,
        day: date,
        entries: pl.DataFrame,
        sidecars: dict[str, Callable[[Path], None]] | None = None,
        row_group_size: int | None = None,
        compaction: Compaction | None = None,
    ) -> list[date]:
        """Record what `day` kept; returns the later days this made stale (empty when nothing changed).

        With `compaction`, the segments ending on `day` are merged now, so later readers merge nothing."""
        parent = self.parent_chain(day)
        self.root.mkdir(parents=True, exist_ok=True)
        lock = (
            writer_lock(self.lock_home, f"state.{self.root.name}", f"day={day.isoformat()}")
            if self.lock_home is not None
            else nullcontext()
        )
        with lock:
            return self._commit(day, parent, entries, sidecars, row_group_size, compaction)

    def _commit(self, day, parent, entries, sidecars, row_group_size, compaction) -> list[date]:
        # temp files of a commit of this day killed half-way (one commit of a day at a time: no other is
        # in flight); a fresh name per attempt, so nothing half-written is ever taken for this one's
        for leftover in self.root.glob(f".*{day.isoformat()}*"):
            leftover.unlink(missing_ok=True)
        attempt = uuid.uuid4().hex[:12]
        tmp = self.root / f".day={day.isoformat()}.pending-{attempt}.parquet"
        atomic_write_parquet(tmp, entries, row_group_size=row_group_size)
        run_hash = file_digest(tmp)
        stem = f"run-{day.isoformat()}-{run_hash[:16]}"
        run = self.root / f"{stem}.parquet"
        durable_replace(tmp, run)
        written = {}
        for suffix, write in (sidecars or {}).items():
            target = self.root / f"{stem}.{suffix}"
            # the same entries make the same file: reuse one already in place, once checked whole
            if not (target.exists() and is_complete(target)):
                part = self.root / f".{stem}.{suffix}.pending-{attempt}"
                write(part)
                durable_replace(part, target)
            written[suffix] = target.name
        crash_point("commit")
        old = self.manifest(day)
        chain = _chain(parent, run_hash)
        manifest = {
            "day": day.isoformat(),
            "kind": self.kind,
            "run": run.name,
            "rows": entries.height,
            "sidecars": written,
            "parent": parent,
            "chain": chain,
        }
        atomic_write_text(self._manifest_path(day), json.dumps(manifest, sort_keys=True))
        keep = {run.name, *written.values()}
        for stale_file in self.root.glob(f"run-{day.isoformat()}-*"):
            if stale_file.name not in keep:
                stale_file.unlink(missing_ok=True)
        if compaction is not None:
            self._block(*self._block_ending(day, compaction.max_block_days), compaction)
        if old is None or old.get("chain") == chain:
            return []
        return self._mark_later_stale(day)

    def _mark_later_stale(self, day: date) -> list[date]:
        stale = []
        for d in self.committed_days():
            man = self.manifest(d)
            if d > day and man is not None and not man.get("stale_since"):
                man["stale_since"] = day.isoformat()
                atomic_write_text(self._manifest_path(d), json.dumps(man, sort_keys=True))
                stale.append(d)
        return stale


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def days_covered(runs: list[Run]) -> int:
    return sum(((r.last or r.day) - r.day).days + 1 for r in runs)
