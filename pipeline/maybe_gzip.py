"""Opening an input file that may be gzipped: gzip is known by its magic bytes, whatever the file's name."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"


def open_maybe_gzip(path: str | Path, mode: str = "rt", errors: str | None = None, follow_symlinks: bool = True) -> IO:
    """`path` opened for reading, through gzip when its bytes open with gzip's magic number (a `.jsonl` holding
    gzip is decompressed, a `.gz` holding plain text read as it is); text modes read UTF-8 (`errors` as `open`
    takes it), binary modes (`"rb"`) the bytes. With `follow_symlinks=False` a symbolic link is never opened
    (ELOOP), even one swapped in after the caller checked the path."""
    if mode not in ("r", "rt", "rb"):
        raise ValueError(f"mode={mode!r}: an input is opened with 'rt' (text) or 'rb' (bytes)")
    flags = os.O_RDONLY | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    raw = os.fdopen(os.open(path, flags), "rb")
    stream: IO[bytes] = raw
    if raw.peek(len(GZIP_MAGIC))[: len(GZIP_MAGIC)] == GZIP_MAGIC:
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
        # as gzip.open does for a file it opened itself: closing the GzipFile closes the file under it
        stream.myfileobj = raw
    if mode == "rb":
        return stream
    return io.TextIOWrapper(stream, encoding="utf-8", errors=errors)
