"""One writer at a time: inter-process locks on what a run writes (a step's day, a generation's stage).

Two runs of the same day of a step (a backfill started twice, a retry beside the attempt it retries)
would otherwise write the same partition and the same cross-day state at once. A lock is a `filelock`
file under ``<home>/locks``: the OS releases it when its process dies, so a killed run never leaves a
lock behind. A second writer waits up to its timeout and is then refused with `WriterBusy`, which
names who holds the lock.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_DIR = "locks"
# how long a second writer waits for the first one before it is refused; a daily step takes minutes
DEFAULT_WAIT_S = 600.0


class WriterBusy(RuntimeError):
    """Another process holds the lock on what this run would write."""


def lock_path(home: Path | str, scope: str, key: str) -> Path:
    """The lock file of `key` (a day, a generation) within `scope` (a step, a table)."""
    names = [re.sub(r"[^A-Za-z0-9_.=\-]+", "_", s).strip("._") or "_" for s in (scope, key)]
    return Path(home) / LOCK_DIR / names[0] / f"{names[1]}.lock"


def holder(path: Path) -> dict:
    """Who holds (or last held) the lock at `path`, as it wrote itself down; {} when unknown."""
    try:
        return json.loads(path.with_suffix(".holder").read_text())
    except (OSError, ValueError):
        return {}


@contextmanager
def writer_lock(
    home: Path | str, scope: str, key: str, *, wait_s: float | None = None, owner: str = ""
) -> Iterator[Path]:
    """Hold the lock of `scope`/`key` for the body; wait at most `wait_s` seconds for it (0: do not wait;
    None: `DEFAULT_WAIT_S`), then raise `WriterBusy`. `owner` (a run id) is written beside the lock for the
    refusal message."""
    wait_s = DEFAULT_WAIT_S if wait_s is None else wait_s
    path = lock_path(home, scope, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    # thread_local=False: the lock is the process's, whichever thread releases it; separate FileLock
    # objects on one path still exclude each other (one flock per open file), threads of one process too
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        held = holder(path)
        by = ", ".join(f"{k} {v}" for k, v in held.items()) or "another process"
        raise WriterBusy(
            f"{scope} of {key} is being written by {by} (lock {path}); waited {wait_s:.0f}s. Let that run "
            "finish, or cancel it, then run this again."
        ) from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        if owner:
            info["run"] = owner
        path.with_suffix(".holder").write_text(json.dumps(info))
        yield path
    finally:
        lock.release()
