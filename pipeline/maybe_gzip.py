"""Opening an input file that may be gzipped: a name ending in `.gz` is decompressed as it is read."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO


def open_maybe_gzip(path: str | Path, mode: str = "rt", errors: str | None = None) -> IO:
    """`path` opened for reading, through gzip when its name ends in `.gz`; text modes read UTF-8 (`errors` as
    `open` takes it), binary modes (`"rb"`) the bytes."""
    if mode not in ("r", "rt", "rb"):
        raise ValueError(f"mode={mode!r}: an input is opened with 'rt' (text) or 'rb' (bytes)")
    text = {} if mode == "rb" else {"encoding": "utf-8", "errors": errors}
    opener = gzip.open if str(path).endswith(".gz") else open
    return opener(path, "rb" if mode == "rb" else "rt", **text)
