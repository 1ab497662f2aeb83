"""Durable commits: what a rename commits is on disk before the rename, and the rename itself after it.

A rename is atomic, but not durable by itself: after a power loss the new name can point at a file
whose blocks never reached the disk (a file of zeros, or a short one), or the rename can be undone.
So a commit is: write the file under a temporary name, fsync it, rename it onto its target, fsync the
folder. A file found already in place and reused is checked first (`is_complete`): a crash before
this rule existed, or a copy by hand, may have left it short.
"""

from __future__ import annotations

import os
from pathlib import Path

NUMPY_MAGIC = b"\x93NUMPY"


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make the entries of folder `path` (renames, creations, removals) durable; a no-op where folders
    cannot be opened (not POSIX)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (the folder itself last), before renaming it into place."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                fsync_file(path)
        fsync_dir(Path(folder))


def durable_replace(tmp: Path, target: Path) -> Path:
    """Rename the fully written `tmp` onto `target` durably: fsync the file, rename, fsync the folder."""
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    return target


def is_complete(path: Path) -> bool:
    """Whether a file found in place may be reused: not empty, and where its format says how long it is
    (a NumPy array) exactly that long; a FAISS index must start with its type code.

    Files of other formats pass when not empty; their writers rename them into place only when whole.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            return False
        with open(path, "rb") as f:
            head = f.read(len(NUMPY_MAGIC))
            if head == NUMPY_MAGIC:
                return _npy_is_whole(f, size)
    except OSError:
        return False
    if path.suffix == ".faiss":
        # an index file starts with the four-letter code of its type ("IxF2", "IwFl", "IvPQ", ...)
        return size >= 8 and head[:1] == b"I" and head[:4].isalnum()
    return True


def _npy_is_whole(f, size: int) -> bool:
    import numpy as np

    f.seek(0)
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
    except ValueError:
        return False
    if dtype.hasobject:
        return False
    return size == f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
