"""The code location: every asset, check, job, schedule and resource of the flywheel."""


import dagster as dg

from assets.ingest import ingest
from assets.jobs import consolidation_job, consolidation_schedule
from assets.resources import FlywheelSettings

defs = dg.Definitions(
    assets=[ingest],
    jobs=[consolidation_job],
    schedules=[consolidation_schedule],
    resources={"settings": FlywheelSettings()},
)
