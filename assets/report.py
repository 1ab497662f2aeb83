"""The daily data-quality report: one offline HTML page per day, and its summary in the UI."""

from datetime import date

import dagster as dg

from assets.cross_day import day_vectors
from assets.curation import CurationSettings
from assets.partitions import daily
from assets.resources import FlywheelSettings
from assets.versions import StepMemo, fingerprint
from pipeline.digest import file_digest
from pipeline.lake import Lake
from quality.daily import build_daily_report


def _report_inputs(lake: Lake, day: date) -> list:
    """What the report reads: every table's partition of the day, the previous day's (drift), the saved
    suite results of the day."""
    files = [f for table in lake.tables() for f in lake.files(table, day)]
    for table in ("conversations", "unique_prompts", "clusters", "topic_assignments"):
        prev = lake.previous_day(table, day)
        files += lake.files(table, prev) if prev else []
    files += sorted((lake.home / "state" / "suite_results").glob(f"*/day={day.isoformat()}.json"))
    return files


@dg.asset(
    deps=["prompts"],
    partitions_def=daily,
    group_name="quality",
    kinds={"html"},
    code_version="report-2",
    description="The day's data-quality report: counts in and out per stage, quarantine reasons, PII by type, "
    "dup rates, topic shares, drift against the previous day and every check's status.",
)
def quality_report(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day = date.fromisoformat(context.partition_key)
    lake = settings.lake()
    folder = settings.reports_dir / "quality" / day.isoformat()
    code = context.assets_def.code_versions_by_key.get(context.asset_key) or ""
    memo = StepMemo(
        settings.home, "quality_report", day, fingerprint(code, curation.embed_turns, _report_inputs(lake, day))
    )
    if (events := memo.replay(folder / "index.html")) is not None:
        yield from events
        return
    files = build_daily_report(lake, day, folder, vectors_of=lambda d: day_vectors(lake, d, curation, settings))
    result = dg.MaterializeResult(
        data_version=dg.DataVersion(file_digest(files.index)),
        metadata={
            "report": dg.MetadataValue.path(str(files.index.resolve())),
            "summary": dg.MetadataValue.md(files.markdown),
            "suite_pages": dg.MetadataValue.json({k: str(v.resolve()) for k, v in files.suite_pages.items()}),
        },
    )
    memo.save([result])
    yield result
