"""Two runs of one day at once (a backfill started twice) leave the lake and the cross-day state byte for
byte as one clean run does: the second run of each step waits for the first (`pipeline.locks`)."""

import shutil
import time

import dagster as dg
import pytest

from tests.assets.day_runs import DAY_CHAIN, resources, snapshot, start_chain
from tests.assets.traffic import DAY, write_traffic

DAY2 = "2026-01-06"


@pytest.mark.integration
def test_two_runs_of_one_day_at_once_equal_one_clean_run(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_traffic(src, n_conversations=30)
    write_traffic(src, n_conversations=30, day=DAY2, offset=20)
    base = tmp_path / "base"
    assert dg.materialize(DAY_CHAIN, partition_key=DAY, resources=resources(base, src)).success

    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    assert dg.materialize(DAY_CHAIN, partition_key=DAY2, resources=resources(clean, src)).success

    both = tmp_path / "both"
    shutil.copytree(base, both)
    procs = []
    for _ in range(2):
        procs.append(start_chain(both, src, DAY2))
        time.sleep(0.5)
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
    got, expected = snapshot(both, True), snapshot(clean, True)
    assert got.keys() == expected.keys(), got.keys() ^ expected.keys()
    assert [k for k in got if got[k] != expected[k]] == []
