"""The code location: every asset, check, job, schedule and resource of the flywheel."""


import dagster as dg

from assets.curation import CURATION_ASSETS, CurationSettings
from assets.ingest import ingest
from assets.report import quality_report
from assets.jobs import consolidation_job, consolidation_schedule
from assets.resources import FlywheelSettings

defs = dg.Definitions(
    assets=[ingest, *CURATION_ASSETS, quality_report],
    jobs=[consolidation_job],
    schedules=[consolidation_schedule],
    resources={"settings": FlywheelSettings(), "curation": CurationSettings()},
)
