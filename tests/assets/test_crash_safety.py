"""A daily step killed with SIGKILL at several points, then run again, leaves the lake and the cross-day
state byte for byte as an uninterrupted run does."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.curation import CurationSettings, deduped_prompts, scrubbed_conversations, static_prompts
from assets.ingest import ingest
from assets.resources import FlywheelSettings
from pipeline.crash import ENV
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


def _resources(home: Path, src: Path) -> dict:
    return {
        "settings": FlywheelSettings(home=str(home), source_kind="folder", source_path=str(src)),
        "curation": CurationSettings(history_start=DAY),
    }


def _snapshot(home: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(home)): p.read_bytes()
        for top in ("lake", "state")
        for p in sorted((home / top).rglob("*"))
        if p.is_file()
    }


@pytest.mark.integration
def test_killed_step_rerun_gives_the_same_lake(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_traffic(src, n_conversations=30)
    write_traffic(src, n_conversations=30, day=DAY2, offset=20)
    base = tmp_path / "base"
    upstream = [ingest, scrubbed_conversations, static_prompts]
    assert dg.materialize([*upstream, deduped_prompts], partition_key=DAY, resources=_resources(base, src)).success
    assert dg.materialize(upstream, partition_key=DAY2, resources=_resources(base, src)).success

    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    assert dg.materialize([deduped_prompts], partition_key=DAY2, resources=_resources(clean, src)).success
    expected = _snapshot(clean)
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
        assert _snapshot(home) != expected, point  # the kill left the day half done
        assert dg.materialize([deduped_prompts], partition_key=DAY2, resources=_resources(home, src)).success
        got = _snapshot(home)
        assert got.keys() == expected.keys(), (point, got.keys() ^ expected.keys())
        assert [k for k in got if got[k] != expected[k]] == [], point
