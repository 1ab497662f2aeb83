"""Jobs and schedules."""


import dagster as dg

from assets.partitions import daily

consolidation_job = dg.define_asset_job(
    "consolidation",
    selection=dg.AssetSelection.groups("ingest", "curation", "quality"),
    partitions_def=daily,
    description="The daily data consolidation: ingest, then every curation step of the day.",
)

# Materializes yesterday's partition every morning (a daily partitioned job's schedule targets the
# last complete partition).
consolidation_schedule = dg.build_schedule_from_partitioned_job(consolidation_job, hour_of_day=2, minute_of_hour=0)
