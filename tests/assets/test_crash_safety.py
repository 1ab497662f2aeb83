"""A daily step killed with SIGKILL at several points, then run again, leaves the lake and the cross-day
state byte for byte as an uninterrupted run does: ingest, exact and near dedup, the compaction of their
history into a segment, semantic dedup. (A checkpoint folder swap killed half-way: tests/pipeline/test_durable.py.)"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.curation import deduped_prompts, scrubbed_conversations, static_prompts
from assets.ingest import ingest
from pipeline.crash import ENV
from tests.assets.day_runs import DAY_CHAIN, resources, snapshot, start_chain
from tests.assets.traffic import DAY, write_traffic

DAY2 = "2026-01-06"
REPO = Path(__file__).resolve().parents[2]

STEP = """
import sys
import dagster as dg
from assets.curation import CurationSettings, deduped_prompts
from assets.resources import FlywheelSettings
home, src, day, first = sys.argv[1:5]
settings = FlywheelSettings(home=home, source_kind="folder", source_path=src)
dg.materialize([deduped_prompts], partition_key=day, resources={"settings": settings, "curation": CurationSettings(history_start=first)})
"""


@pytest.mark.integration
def test_killed_step_rerun_gives_the_same_lake(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_traffic(src, n_conversations=30)
    write_traffic(src, n_conversations=30, day=DAY2, offset=20)
    base = tmp_path / "base"
    upstream = [ingest, scrubbed_conversations, static_prompts]
    assert dg.materialize([*upstream, deduped_prompts], partition_key=DAY, resources=resources(base, src)).success
    assert dg.materialize(upstream, partition_key=DAY2, resources=resources(base, src)).success

    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    assert dg.materialize([deduped_prompts], partition_key=DAY2, resources=resources(clean, src)).success
    expected = snapshot(clean)
    assert any("near_dedup/run-2026-01-06" in k for k in expected)

    # mid-write of the exact history's run; the near history's run written, its manifest not; the table
    # written, its drops not; mid-write of the last drops
    for point in ("parquet:1", "commit:2", "publish:1", "parquet:5"):
        home = tmp_path / point.replace(":", "-")
        shutil.copytree(base, home)
        env = {**os.environ, ENV: point, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-c", STEP, str(home), str(src), DAY2, DAY], cwd=REPO, env=env, capture_output=True
        )
        assert proc.returncode == -9, (point, proc.stderr.decode()[-2000:])
        assert snapshot(home) != expected, point  # the kill left the day half done
        assert dg.materialize([deduped_prompts], partition_key=DAY2, resources=resources(home, src)).success
        got = snapshot(home)
        assert got.keys() == expected.keys(), (point, got.keys() ^ expected.keys())
        assert [k for k in got if got[k] != expected[k]] == [], point


@pytest.mark.integration
def test_killed_ingest_compaction_and_semantic_dedup_reruns_give_the_same_lake(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_traffic(src, n_conversations=30)
    write_traffic(src, n_conversations=30, day=DAY2, offset=20)
    base = tmp_path / "base"
    assert dg.materialize(DAY_CHAIN, partition_key=DAY, resources=resources(base, src)).success

    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    assert dg.materialize(DAY_CHAIN, partition_key=DAY2, resources=resources(clean, src)).success
    expected = snapshot(clean, True)
    # the second day closes the history's first block of two days: exact dedup compacts it into a segment
    assert any(k.startswith("state/exact_dedup/seg-2026-01-05-2026-01-06") for k in expected)
    assert any("semantic_dedup/run-2026-01-06" in k for k in expected)

    # ingest's first table written to its temp file, not renamed; the segment written, its sidecar and
    # manifest not; the semantic history's run and index written, its manifest not (the third commit)
    for point in ("parquet:1", "segment:1", "commit:3"):
        home = tmp_path / point.replace(":", "-")
        shutil.copytree(base, home)
        proc = start_chain(home, src, DAY2, {ENV: point})
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == -9, (point, err.decode()[-2000:])
        assert snapshot(home, True) != expected, point
        assert dg.materialize(DAY_CHAIN, partition_key=DAY2, resources=resources(home, src)).success
        got = snapshot(home, True)
        assert got.keys() == expected.keys(), (point, got.keys() ^ expected.keys())
        assert [k for k in got if got[k] != expected[k]] == [], point
