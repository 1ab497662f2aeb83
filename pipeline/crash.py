"""Named crash points, for proving that a step killed anywhere leaves a lake its re-run repairs.

Set ``FLYWHEEL_CRASH_AT=<point>:<n>`` and the process kills itself (SIGKILL: no cleanup, no
`finally`) the n-th time it reaches `crash_point(<point>)`. Unset, a crash point costs one
dictionary lookup. The points sit where a write is half done: a temp file written but not renamed
(`parquet`), a history run written but its manifest not (`commit`), a table written but its drops
not (`publish`), a shard's vectors encoded but not written (`embed_shard_<n>`: shard n only).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "FLYWHEEL_CRASH_AT"
_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
