"""Consolidate the whole embedded corpus (every replayed day) twice and print the wall times.

The second run re-materializes the same days with the same inputs, settings and code: every step
finds its fingerprint unchanged and reports its recorded data version without redoing its work
(`assets.versions`). Target: the second run takes at most 0.20 of the first.

    python bench/bench_consolidation.py [--days N] [--home DIR]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=0, help="only the last N replayed days (0 = all)")
    parser.add_argument("--home", default=None, help="FLYWHEEL_HOME to use (default: a fresh temporary folder)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="flywheel-bench-"))
    os.environ["FLYWHEEL_HOME"] = str(home)
    import dagster as dg

    from assets.definitions import defs
    from assets.resources import FlywheelSettings

    days = [d.isoformat() for d in FlywheelSettings().source_config().replay_days_list()]
    days = days[-args.days :] if args.days else days
    job = defs.resolve_job_def("consolidation")
    instance = dg.DagsterInstance.ephemeral()
    # the first benchmarked day starts the cross-day history
    run_config = {"resources": {"curation": {"config": {"history_start": days[0]}}}}
    times = []
    for attempt in ("first", "second"):
        t0 = time.perf_counter()
        for day in days:
            result = job.execute_in_process(
                partition_key=day, instance=instance, raise_on_error=False, run_config=run_config
            )
            if not result.success:
                print(f"{attempt} run failed on {day}", file=sys.stderr)
                return 1
        times.append(time.perf_counter() - t0)
        print(f"{attempt} run over {len(days)} days: {times[-1]:.1f}s")
    lake = FlywheelSettings().lake()
    counts = lake.query(
        "SELECT (SELECT sum(records_read) FROM ingest_stats) AS records, (SELECT count(*) FROM static_prompts) AS "
        "static_prompts, (SELECT count(*) FROM unique_prompts) AS unique_prompts, (SELECT count(*) FROM prompts) AS pool"
    )
    print(counts)
    unchanged = sum(
        1
        for e in instance.all_logs(result.run_id)
        if e.dagster_event is not None
        and e.dagster_event.is_step_materialization
        and "unchanged" in e.dagster_event.event_specific_data.materialization.metadata
    )
    print(f"last run: {unchanged} materializations reported unchanged")
    print(f"second / first: {times[1] / times[0]:.3f}  (target <= 0.20; cpu count {os.cpu_count()}, home {home})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
