"""`make demo`: materialize the daily consolidation job for the default days of the embedded data.

Runs go into the local Dagster instance (DAGSTER_HOME), so `make ui` shows them afterwards.

    python -m assets.demo                 # the last 3 replayed days
    python -m assets.demo --days all     # every replayed day
    python -m assets.demo --days 2026-01-13 2026-01-14
"""

import argparse
import sys
import time
from datetime import date

import dagster as dg

from assets.definitions import defs
from assets.resources import FlywheelSettings


def _days(arg: list[str], settings: FlywheelSettings) -> list[str]:
    replay = settings.source_config().replay_days_list()
    if arg == ["all"]:
        return [d.isoformat() for d in replay]
    if arg:
        return [date.fromisoformat(d).isoformat() for d in arg]
    return [d.isoformat() for d in replay[-3:]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", nargs="*", default=[], help="days to materialize (YYYY-MM-DD), or 'all'")
    args = parser.parse_args(argv)
    settings = FlywheelSettings()
    days = _days(args.days, settings)
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("consolidation")
    for day in days:
        t0 = time.perf_counter()
        result = job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False)
        status = "ok" if result.success else "FAILED"
        print(f"consolidation {day}: {status} in {time.perf_counter() - t0:.1f}s (run {result.run_id})")
        if not result.success:
            return 1
    lake = settings.lake()
    print()
    print(f"lake:    {lake.root.resolve()}")
    print(f"catalog: {lake.catalog_path.resolve()}  (duckdb; one view per table)")
    print(f"reports: {settings.reports_dir.resolve()}")
    print(lake.query(
        "SELECT day, records_read, accepted, quarantined FROM ingest_stats ORDER BY day"
    ))
    print("browse the runs and assets: make ui  (http://127.0.0.1:3000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
