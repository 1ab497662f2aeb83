"""Jobs, schedules and sensors."""

import dagster as dg
import polars as pl

from assets.executors import consolidation_executor
from assets.generation import GROUP_HERD, GROUP_PRE, GROUP_RELEASE, GenerationSettings, recorded_generations
from assets.partitions import daily
from assets.resources import FlywheelSettings

consolidation_job = dg.define_asset_job(
    "consolidation",
    selection=dg.AssetSelection.groups("ingest", "curation", "quality"),
    partitions_def=daily,
    # a launched run spreads its steps (the embedding shards among them) over `workers` processes or Jobs
    executor_def=consolidation_executor(),
    description="The daily data consolidation: ingest, then every curation step of the day, then its report.",
)

# Materializes yesterday's partition every morning (a daily partitioned job's schedule targets the
# last complete partition).
consolidation_schedule = dg.build_schedule_from_partitioned_job(consolidation_job, hour_of_day=2, minute_of_hour=0)

generation_job = dg.define_asset_job(
    "generation",
    selection=dg.AssetSelection.groups(GROUP_PRE, GROUP_HERD, GROUP_RELEASE),
    # the run queue lets one run of this lane at a time (dagster.yaml `tag_concurrency_limits`)
    tags={"flywheel/lane": "generation"},
    description="One generation of the flywheel: reward models, datasets, SFT -> DPO -> GRPO, evaluation, "
    "release gates, A/B readout and the generation record.",
)

weekly_generation_schedule = dg.ScheduleDefinition(
    name="weekly_generation",
    job=generation_job,
    cron_schedule="0 6 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Starts a generation every Monday at 06:00 UTC (turn it on in the UI).",
)


# runs that will still write: a generation started beside one of these would build on a half-made one
IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def fresh_prompts(settings: FlywheelSettings) -> tuple[int, str | None]:
    """Pool prompts on days after the last recorded generation's window, and the newest such day."""
    lake = settings.lake()
    if not lake.exists("prompts"):
        return 0, None
    recorded = recorded_generations(lake)
    after = None
    if recorded.height and "window_end" in recorded.columns:
        after = recorded["window_end"].cast(pl.Utf8).max()
    sql = "SELECT count(*) AS n, max(day) AS last FROM prompts" + (" WHERE day > CAST(? AS DATE)" if after else "")
    row = lake.query(sql, [after] if after else None).row(0, named=True)
    return int(row["n"]), (str(row["last"]) if row["last"] is not None else None)


@dg.sensor(
    job=generation_job,
    minimum_interval_seconds=3600,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts a generation when enough fresh curated prompts have accumulated since the last one.",
)
def fresh_prompts_sensor(
    context: dg.SensorEvaluationContext, settings: FlywheelSettings, generation: GenerationSettings
):
    running = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=generation_job.name, statuses=IN_FLIGHT), limit=1
    )
    if running:
        # one generation at a time: the next one starts from this one's result
        return dg.SkipReason(f"generation run {running[0].run_id} is {running[0].status.value.lower()}")
    n, last_day = fresh_prompts(settings)
    if n < generation.min_fresh_prompts or last_day is None:
        return dg.SkipReason(f"{n} fresh prompts; a generation starts at {generation.min_fresh_prompts}")
    # one run per newest day: the sensor never starts the same generation twice
    return dg.RunRequest(run_key=f"fresh-through-{last_day}", tags={"fresh_prompts": str(n)})
