"""The daily data-quality report: one offline HTML page per day, and its summary in the UI."""

from datetime import date

import dagster as dg

from assets.curation import CurationSettings, _vectors
from assets.partitions import daily
from assets.resources import FlywheelSettings
from quality.daily import build_daily_report


@dg.asset(
    deps=["prompts"],
    partitions_def=daily,
    group_name="quality",
    kinds={"html"},
    description="The day's data-quality report: counts in and out per stage, quarantine reasons, PII by type, "
    "dup rates, topic shares, drift against the previous day and every check's status.",
)
def quality_report(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day = date.fromisoformat(context.partition_key)
    lake = settings.lake()
    folder = settings.reports_dir / "quality" / day.isoformat()
    files = build_daily_report(lake, day, folder, vectors_of=lambda d: _vectors(lake, d, curation, settings))
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(files.index.resolve())),
            "summary": dg.MetadataValue.md(files.markdown),
            "suite_pages": dg.MetadataValue.json({k: str(v.resolve()) for k, v in files.suite_pages.items()}),
        }
    )
