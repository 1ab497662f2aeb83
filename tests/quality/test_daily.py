import os
import time
from datetime import date

import polars as pl

from pipeline.lake import Lake
from quality.daily import save_suite_result, suite_result_path, validate_partition
from quality.outcomes import SuiteResult

DAY = date(2026, 1, 5)


def test_report_reuses_a_saved_suite_result_until_the_partition_changes(tmp_path):
    lake = Lake(tmp_path)
    df = pl.DataFrame({"cluster_id": [0, 1], "size": [3, 1], "share": [0.75, 0.25], "day": [DAY, DAY]})
    lake.write("clusters", DAY, df)
    saved = SuiteResult(table="clusters", success=True, statistics={"marker": 42}, outcomes=[])
    save_suite_result(lake, "clusters", DAY, saved)
    assert validate_partition(lake, "clusters", "clusters", DAY, df).statistics == {"marker": 42}

    # a partition rewritten after the result was saved is validated again
    later = time.time() + 5
    for f in lake.files("clusters", DAY):
        os.utime(f, (later, later))
    fresh = validate_partition(lake, "clusters", "clusters", DAY, df)
    assert fresh.statistics != {"marker": 42} and fresh.table == "clusters"

    # an unreadable saved result is ignored, not trusted
    earlier = time.time() - 100
    for f in lake.files("clusters", DAY):
        os.utime(f, (earlier, earlier))
    suite_result_path(lake, "clusters", DAY).write_bytes(b"not json")
    assert validate_partition(lake, "clusters", "clusters", DAY, df).statistics != {"marker": 42}
    suite_result_path(lake, "clusters", DAY).write_text('{"table": "clusters", "outcomes": 3}')
    assert validate_partition(lake, "clusters", "clusters", DAY, df).statistics != {"marker": 42}


class _Planted:
    """A pickle that, when loaded, creates a file: what a writer of the shared volume could leave there."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_saved_suite_results_are_json_and_a_planted_pickle_is_never_loaded(tmp_path):
    import json
    import pickle

    import numpy as np

    from quality.outcomes import ExpectationOutcome

    lake = Lake(tmp_path)
    df = pl.DataFrame({"cluster_id": [0, 1], "size": [3, 1], "share": [0.75, 0.25], "day": [DAY, DAY]})
    lake.write("clusters", DAY, df)
    outcome = ExpectationOutcome(
        name="expect_column_values_to_be_between",
        column="share",
        success=False,
        observed=np.float64(0.75),
        unexpected_count=np.int64(1),
        examples=[np.float64(1.5), "x" * 500],
        params={"min_value": 0, "max_value": float("inf")},
    )
    saved = SuiteResult.from_outcomes("clusters", [outcome], rows=2)
    save_suite_result(lake, "clusters", DAY, saved)
    path = suite_result_path(lake, "clusters", DAY)
    assert path.suffix == ".json"
    back = validate_partition(lake, "clusters", "clusters", DAY, df)
    assert back.to_metadata() == saved.to_metadata() and json.loads(path.read_text())["table"] == "clusters"
    assert back.outcomes[0].examples[1] == "x" * 500  # kept whole: the metadata cuts it, not the store

    marker = tmp_path / "code-ran"
    path.write_bytes(pickle.dumps(_Planted(marker)))
    path.with_suffix(".pkl").write_bytes(pickle.dumps(_Planted(marker)))
    assert validate_partition(lake, "clusters", "clusters", DAY, df).table == "clusters"
    assert not marker.exists()
