"""Opening an input file that may be gzipped: a name ending in `.gz` is decompressed as it is read."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import IO


def open_maybe_gzip(path: str | Path, mode: str = "rt", errors: str | None = None, follow_symlinks: bool = True) -> IO:
    """`path` opened for reading, through gzip when its name ends in `.gz`; text modes read UTF-8 (`errors` as
    `open` takes it), binary modes (`"rb"`) the bytes. With `follow_symlinks=False` a symbolic link is never
    opened (ELOOP), even one swapped in after the caller checked the path."""
    if mode not in ("r", "rt", "rb"):
        raise ValueError(f"mode={mode!r}: an input is opened with 'rt' (text) or 'rb' (bytes)")
    flags = os.O_RDONLY | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    raw = os.fdopen(os.open(path, flags), "rb")
    stream: IO[bytes] = raw
    if str(path).endswith(".gz"):
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
        # as gzip.open does for a file it opened itself: closing the GzipFile closes the file under it
        stream.myfileobj = raw
    if mode == "rb":
        return stream
    return io.TextIOWrapper(stream, encoding="utf-8", errors=errors)
