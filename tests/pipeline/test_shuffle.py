"""The shuffle folder of a sharded step: per run, atomic files, removed by the collect step."""

from datetime import date

import polars as pl
import pytest

from pipeline.shuffle import Shuffle


def test_files_live_per_run_and_are_cleared(tmp_path):
    a = Shuffle(tmp_path, "run-a", "prompt_embeddings", date(2026, 1, 5))
    b = Shuffle(tmp_path, "run-b", "prompt_embeddings", date(2026, 1, 5))
    a.write("plan-0", pl.DataFrame({"x": [1, 2]}))
    b.write("plan-0", pl.DataFrame({"x": [3]}))
    assert a.read("plan-0")["x"].to_list() == [1, 2] and b.read("plan-0")["x"].to_list() == [3]
    assert not list(a.dir.glob(".*"))  # no temp file left beside the written one
    a.clear()
    assert not (tmp_path / "shuffle" / "run-a").exists() and b.read("plan-0").height == 1
    with pytest.raises(FileNotFoundError, match="has not run"):
        a.read("plan-0")
    with pytest.raises(ValueError, match="letters"):
        a.path("../escape")
