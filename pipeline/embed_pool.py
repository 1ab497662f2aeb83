"""The device pool of the torch backend: one worker process per device, stopped in bounded time.

The pool is sentence-transformers' multi-process pool (the same queues and worker loop, so
`SentenceTransformer.encode(pool=...)` drives it), with two differences that keep a run from hanging
when it ends:
- each worker starts with the default SIGTERM action: a parent that ignores SIGTERM (Dagster maps
  SIGTERM to SIGINT's disposition, and SIGINT is ignored in a background job of a non-interactive
  shell) would otherwise hand that to its workers, and `terminate()` would do nothing. An ignored signal
  stays ignored across exec, so the parent's disposition is set to default while the workers are
  spawned (from the main thread; elsewhere each worker resets it once it runs, which leaves its start-up
  to the kill below);
- `stop_pool` waits a bounded time for the workers to exit and kills (SIGKILL) the ones still there.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

# a worker that got SIGTERM exits at once; this leaves time for a busy interpreter to be scheduled
STOP_TIMEOUT_S = 10.0


def _worker(target_device: str, model, input_queue, results_queue) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    type(model)._multi_process_worker(target_device, model, input_queue, results_queue)


def start_pool(model, devices: list[str]) -> dict[str, Any]:
    """Start one worker per entry of `devices` for the SentenceTransformer `model` (moved to the CPU and into
    shared memory, as sentence-transformers' own pool does, so the workers map its weights)."""
    import torch.multiprocessing as mp

    model.to("cpu")
    model.share_memory()
    ctx = mp.get_context("spawn")
    pool: dict[str, Any] = {"input": ctx.Queue(), "output": ctx.Queue(), "processes": []}
    try:
        with _default_sigterm():
            for device in devices:
                p = ctx.Process(target=_worker, args=(device, model, pool["input"], pool["output"]), daemon=True)
                p.start()
                pool["processes"].append(p)
    except BaseException:
        stop_pool(pool)
        raise
    return pool


@contextmanager
def _default_sigterm() -> Iterator[None]:
    """SIGTERM's default action in this process for the body, when it can be set (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_pool(pool: dict[str, Any], timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop the pool's workers: SIGTERM, a join of at most `timeout_s` in all, then SIGKILL for any still
    alive. Returns the pids that had to be killed."""
    processes = pool["processes"]
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + timeout_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    killed = [p.pid for p in processes if p.is_alive()]
    if killed:
        log.warning("embedding pool workers %s did not exit on SIGTERM in %.0fs: killed", killed, timeout_s)
    for p in processes:
        if p.is_alive():
            p.kill()
            p.join()
        p.close()
    # the queues' feeder threads must not wait for a reader that is gone
    pool["input"].cancel_join_thread()
    pool["input"].close()
    pool["output"].cancel_join_thread()
    pool["output"].close()
    return killed
