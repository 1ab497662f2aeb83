"""The code location: every asset, check, job, schedule, sensor and resource of the flywheel."""

import dagster as dg

from assets.curation import CURATION_ASSETS, CurationSettings
from assets.generation import GenerationSettings, generation_plan
from assets.herding import HERDING_ASSETS
from assets.ingest import ingest
from assets.jobs import (
    consolidation_job,
    consolidation_schedule,
    fresh_prompts_sensor,
    generation_job,
    weekly_generation_schedule,
)
from assets.pre_herding import PRE_HERDING_ASSETS
from assets.release import RELEASE_ASSETS, RELEASE_RESOURCES
from assets.report import quality_report
from assets.resources import FlywheelSettings, user_salt_env
from assets.training_launcher import TrainingLauncher

defs = dg.Definitions(
    assets=[
        ingest,
        *CURATION_ASSETS,
        quality_report,
        generation_plan,
        *PRE_HERDING_ASSETS,
        *HERDING_ASSETS,
        *RELEASE_ASSETS,
    ],
    jobs=[consolidation_job, generation_job],
    schedules=[consolidation_schedule, weekly_generation_schedule],
    sensors=[fresh_prompts_sensor],
    resources={
        "settings": FlywheelSettings(user_salt=user_salt_env()),
        "curation": CurationSettings(),
        "generation": GenerationSettings(),
        "launcher": TrainingLauncher(),
        **RELEASE_RESOURCES,
    },
)
