"""Which entries of a folder source hold a day, and which of them are refused before anything is read.

Only regular files inside the folder are read (never through a symbolic link); other entries that name the
day are refused with a reason code. A file-level problem is one record at line 0 (lines count from 1): a file
refused before it is read, or one that could not be read to its end.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from datetime import date
from pathlib import Path

_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
# what names a data file, in any letter case; what the file holds is read from its bytes (`pipeline.file_sniff`)
_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


# A file-level problem is one record at line 0 (lines count from 1): a file refused before it is read,
# or one that could not be read to its end. What was read before a break stays read.

FILE_REFUSED = {
    "symlink": "a symbolic link: refused, never read",
    "outside_source": "resolves outside the source folder: refused, never read",
    "hidden_file": "a hidden file (name starting with '.'), such as an upload in progress: not read",
    "unsupported_file": "not a file the folder source reads",
    "unreadable_file": "could not be opened or read at all",
    "day_too_large": "the day's byte limit was spent by the files before it: not read",
    "empty_file": "holds no record: no bytes, an empty gzip stream, an empty array or only blank lines",
}
FILE_CUT = {
    "truncated_file": "could not be read to its end; the lines before the break are kept",
    "file_too_large": "longer than `max_file_bytes` decompressed; the lines before the limit are kept",
}


@dataclass
class DayScan:
    """The files a day selects: those to read, and those refused with (label, reason code, detail)."""

    files: list[Path]
    refused: list[tuple[str, str, str]]


def _refusal(path: Path, root: Path) -> tuple[str, str] | None:
    """Why `path` is not read, or None for a regular data file inside the source folder. Never opens it."""
    try:
        info = path.lstat()
    except OSError as e:
        return "unreadable_file", f"cannot be looked at: {e.strerror or type(e).__name__}"
    if stat.S_ISLNK(info.st_mode):
        inside = path.resolve().is_relative_to(root)
        code = "symlink" if inside else "outside_source"
        return code, f"a symbolic link {'inside' if inside else 'outside'} the source folder: refused, never read"
    if not path.resolve().is_relative_to(root):
        return "outside_source", FILE_REFUSED["outside_source"]
    if path.name.startswith("."):
        return "hidden_file", FILE_REFUSED["hidden_file"]
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, socket or device)"
        return "unsupported_file", f"{kind}: the folder source reads only files, and day folders named day=YYYY-MM-DD"
    if not path.name.lower().endswith(_SUFFIXES):
        return "unsupported_file", f"the folder source reads {', '.join(_SUFFIXES)} files; this one is not read"
    return None


def scan_day(folder: Path, day: date) -> DayScan:
    """Everything that names `day`: ``day=YYYY-MM-DD/*`` and any entry of `folder` whose name carries the date.

    Only regular files inside `folder` with a readable suffix are to be read; every other entry is refused
    with a reason (a symbolic link, a path resolving outside the folder, a hidden or unsupported file).
    """
    root = folder.resolve()
    iso = day.isoformat()
    day_dir = folder / f"day={iso}"
    candidates: list[Path] = []
    refused: list[tuple[str, str, str]] = []
    if day_dir.is_symlink() or (day_dir.exists() and not day_dir.resolve().is_relative_to(root)):
        code, detail = _refusal(day_dir, root) or ("outside_source", FILE_REFUSED["outside_source"])
        refused.append((day_dir.name, code, detail))
    elif day_dir.is_dir():
        candidates += day_dir.iterdir()
    for p in folder.iterdir():
        m = _DATE_IN_NAME.search(p.name)
        if m and m.group(1) == iso and p.name != day_dir.name:
            candidates.append(p)
    files = []
    for p in sorted(candidates):
        why = _refusal(p, root)
        if why is None:
            files.append(p)
        else:
            refused.append((p.relative_to(folder).as_posix(), *why))
    return DayScan(files, sorted(refused))


def folder_days(folder: Path) -> list[date]:
    days = set()
    for p in folder.iterdir():
        m = _DATE_IN_NAME.search(p.name)
        if m:
            try:
                days.add(date.fromisoformat(m.group(1)))
            except ValueError:
                continue
    return sorted(days)
