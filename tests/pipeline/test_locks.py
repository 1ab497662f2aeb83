"""One writer at a time: a second writer waits for the first, and is refused, naming the holder, when it
waits too long; a killed holder leaves no lock behind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.locks import WriterBusy, holder, lock_path, writer_lock

REPO = Path(__file__).resolve().parents[2]


def test_a_second_writer_waits_for_the_first(tmp_path):
    order: list[str] = []
    entered = threading.Event()

    def first():
        with writer_lock(tmp_path, "deduped_prompts", "2026-01-05"):
            entered.set()
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    entered.wait(10)
    with writer_lock(tmp_path, "deduped_prompts", "2026-01-05", wait_s=30):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]


def test_a_writer_that_waits_too_long_is_refused_naming_the_holder(tmp_path):
    with writer_lock(tmp_path, "deduped_prompts", "2026-01-05", owner="run-abc"):
        with pytest.raises(WriterBusy, match=r"deduped_prompts of 2026-01-05 is being written by .*run-abc"):
            with writer_lock(tmp_path, "deduped_prompts", "2026-01-05", wait_s=0.2):
                pass
        # another day, or another step, is another lock
        with writer_lock(tmp_path, "deduped_prompts", "2026-01-06", wait_s=0):
            pass
        with writer_lock(tmp_path, "unique_prompts", "2026-01-05", wait_s=0):
            pass
    assert holder(lock_path(tmp_path, "deduped_prompts", "2026-01-05"))["pid"] == os.getpid()


def test_a_killed_holder_leaves_no_lock(tmp_path):
    code = (
        "import os, signal, sys\n"
        "from pipeline.locks import writer_lock\n"
        "with writer_lock(sys.argv[1], 'ingest', '2026-01-05'):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert proc.returncode == -9
    with writer_lock(tmp_path, "ingest", "2026-01-05", wait_s=0):
        pass


def test_lock_names_stay_inside_the_lock_folder(tmp_path):
    path = lock_path(tmp_path, "../../etc", "a/b c")
    assert path.parent.parent == tmp_path / "locks" and ".." not in path.parts
