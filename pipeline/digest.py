"""Content digests: one format for every hash the product records of its data, models and runs.

A digest is a sha256 hex string. A file's digest is the sha256 of its bytes, so it is what `sha256sum`
prints. A digest of values (rows of a dataset, several parts naming one thing, files by name) is the sha256
of their canonical JSON, one value per line: keys sorted, non-ASCII kept, anything else JSON cannot hold
written as its `str`. JSON escapes newlines, so the lines frame the values unambiguously ("ab", "c" and "a",
"bc" differ). sha256 rather than a faster-on-paper hash: CPUs with SHA extensions hash it at about 2 GB/s
per core, twice blake2b, and model hubs publish the sha256 of their files.

Hashes recorded before this format are not translated, they are re-recorded as things are rebuilt: dataset
`content_hash`es and `gguf_sha256` keep their values (they were already these formats); folder and file-set
digests, the dedup histories' run hashes and chain, and the step memos' data versions change once, so a
memoised step runs again once, and re-running an already committed dedup day marks the days after it stale
once, as any changed outcome does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

ALGORITHM = "sha256"
HEX_LENGTH = 64


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8") + b"\n"


def rows_digest(rows: Iterable[Any]) -> str:
    """Digest of values in order, each as one canonical JSON line; streams, so rows may be a generator."""
    h = hashlib.new(ALGORITHM)
    for row in rows:
        h.update(_canonical(row))
    return h.hexdigest()


def frame_digest(frame: pl.DataFrame) -> str:
    """`rows_digest` of a frame's rows as dicts (column name -> value), in the frame's order."""
    return rows_digest(frame.iter_rows(named=True))


def digest(*parts: Any) -> str:
    """Digest of a few values that together name one thing (a pair of texts, a parent and a run)."""
    return rows_digest(parts)


def file_digest(path: str | Path) -> str:
    """Digest of a file's bytes, read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, ALGORITHM).hexdigest()


def files_digest(paths: Iterable[Path], root: Path | None = None) -> str | None:
    """Digest of files by name (relative to `root`, else base names) and content, whatever their order or
    location; None for no files."""
    named = sorted((str(p.relative_to(root)) if root else p.name, p) for p in paths)
    if not named:
        return None
    return rows_digest([name, file_digest(p)] for name, p in named)


def dir_digest(directory: Path, exclude: tuple[str, ...] = ()) -> str | None:
    """`files_digest` of every file under `directory` but hidden ones and the names in `exclude`; None when the
    folder does not exist or holds no such file."""
    if not directory.is_dir():
        return None
    files = [p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name not in exclude]
    return files_digest(files, directory)
