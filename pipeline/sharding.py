"""How a day's consolidation spreads: N shards of work, W of them running at once.

A shard is a slice of a step's work that needs no other slice (for embeddings: its batches of the day's
plan, `pipeline.batch_plan`); a worker is a process that runs one shard at a time. The engine that starts
the workers is Dagster's (its multiprocess executor on one machine, one Kubernetes Job per step on a
cluster): this module only holds the numbers, their defaults and their checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def machine_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no CPU sets on this platform
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ShardConfig:
    workers: int = field(
        default_factory=machine_cores,
        metadata={
            "help": "shards run at once (Dagster's multiprocess `max_concurrent`); default: one per core, each "
            "worker with one core's threads, which is what the embedding step (most of a day) scales with"
        },
    )
    shards: int = field(
        default=0,
        metadata={
            "help": "shards a day's embedding work is cut into; 0 = one per worker. The lake is the same at any "
            "number: more shards than workers only evens out the work"
        },
    )
    threads: int = field(
        default=0,
        metadata={"help": "encoder threads of each worker; 0 = the machine's cores shared out among the workers"},
    )

    def __post_init__(self) -> None:
        settings = {"workers": "`workers` (FLYWHEEL_WORKERS)", "shards": "`shards` (FLYWHEEL_SHARDS)"}
        for name in ("workers", "shards", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                label = settings.get(name, "`worker_threads`")
                raise ValueError(f"{label}={value!r} must be an integer: set it to a whole number, e.g. 2")
        if self.workers < 1:
            raise ValueError(f"`workers`={self.workers} must be >= 1: set it (or FLYWHEEL_WORKERS) to e.g. 1 or 2")
        if self.threads < 0:
            raise ValueError(
                f"`worker_threads`={self.threads} must be >= 0 (0 = the cores shared out among the workers)"
            )
        if self.shards < 0:
            raise ValueError(f"`shards`={self.shards} must be >= 0 (0 = one per worker): set it (or FLYWHEEL_SHARDS)")

    @property
    def resolved_shards(self) -> int:
        return self.shards or self.workers

    def threads_per_worker(self, cores: int | None = None) -> int:
        """Threads each worker's encoder uses: `threads`, or the machine's cores shared out, at least one."""
        return self.threads or max(1, (cores or machine_cores()) // self.workers)


def int_from_env(name: str, env: str, default: int) -> int:
    """An integer setting from `env` when it is set (failing fast, naming both, on anything else)."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{env}={raw!r} is not an integer: set `{name}` ({env}) to a whole number, e.g. 2") from None
