"""Durable commits: a reused file is checked whole, and a folder swap killed half-way loses no copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline import keyfile
from pipeline.crash import ENV
from pipeline.durable import durable_replace, is_complete
from pipeline.lake import recover_dir, replace_dir, staging_dir

REPO = Path(__file__).resolve().parents[2]


def test_a_truncated_or_empty_file_is_not_complete(tmp_path):
    keys = tmp_path / "run.keys"
    keyfile.save(keys, np.arange(40, dtype=np.uint64).reshape(2, 20))
    assert is_complete(keys)
    whole = keys.read_bytes()
    keys.write_bytes(whole[:-8])  # a power loss cut the last block
    assert not is_complete(keys)
    keys.write_bytes(whole + b"\0")
    assert not is_complete(keys)
    keys.write_bytes(b"")
    assert not is_complete(keys)
    assert not is_complete(tmp_path / "missing")


def test_a_faiss_index_must_start_with_its_type_code(tmp_path):
    import faiss

    index = faiss.IndexFlatIP(4)
    index.add(np.eye(4, dtype=np.float32))
    path = tmp_path / "run.faiss"
    faiss.write_index(index, str(path))
    assert is_complete(path)
    path.write_bytes(b"\0" * 64)  # blocks never written before the power loss read as zeros
    assert not is_complete(path)


def test_durable_replace_commits_the_file(tmp_path):
    tmp = tmp_path / ".x.tmp"
    tmp.write_text("whole")
    assert durable_replace(tmp, tmp_path / "x").read_text() == "whole" and not tmp.exists()


SWAP = """
import sys
from pathlib import Path
from pipeline.lake import replace_dir
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
replace_dir(src, dst)
"""


def test_a_swap_killed_between_its_renames_keeps_the_old_copy_and_the_next_call_restores_it(tmp_path):
    dst = tmp_path / "sft"
    dst.mkdir()
    (dst / "model.safetensors").write_text("old")
    new = staging_dir(dst)
    (new / "model.safetensors").write_text("new")
    env = {**os.environ, ENV: "swap:1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", SWAP, str(new), str(dst)], cwd=REPO, env=env)
    assert proc.returncode == -9
    # killed with the old folder set aside and the new one not yet in place: both copies are on disk
    aside = list(tmp_path.glob(".sft.old-*"))
    assert not dst.exists() and len(aside) == 1 and (new / "model.safetensors").read_text() == "new"
    assert recover_dir(dst) == aside[0]
    assert (dst / "model.safetensors").read_text() == "old" and not list(tmp_path.glob(".sft.old-*"))
    # the re-run's swap goes through and leaves one folder
    retry = staging_dir(dst)
    (retry / "model.safetensors").write_text("new")
    replace_dir(retry, dst)
    assert (dst / "model.safetensors").read_text() == "new"
    # what is left beside it is the killed attempt's staging folder, never taken for the output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.name, "sft"])


def test_copies_aside_are_removed_only_once_the_target_is_in_place(tmp_path):
    dst = tmp_path / "dpo"
    aside = tmp_path / ".dpo.old-00000000000000000001-aaaa"
    aside.mkdir()
    (aside / "f").write_text("previous")
    fresh = tmp_path / "src"
    fresh.mkdir()
    (fresh / "f").write_text("next")
    replace_dir(fresh, dst)  # recovers the copy aside first, then swaps it for the new one
    assert (dst / "f").read_text() == "next" and sorted(p.name for p in tmp_path.iterdir()) == ["dpo"]
