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
    suite_result_path(lake, "clusters", DAY).write_bytes(b"not a pickle")
    assert validate_partition(lake, "clusters", "clusters", DAY, df).statistics != {"marker": 42}
