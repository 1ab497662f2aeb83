"""In-process runs of the consolidation assets on a small folder of real-looking traffic."""

from datetime import date

import dagster as dg
import polars as pl
import pytest

from assets.curation import (
    CURATION_ASSETS,
    CurationSettings,
    deduped_prompts,
    scrubbed_conversations,
    static_prompts,
)
from assets.definitions import defs
from assets.ingest import ingest
from assets.report import quality_report
from assets.resources import FlywheelSettings
from pipeline import schema
from pipeline.lake import Lake
from tests.assets.traffic import DAY, write_traffic


@pytest.fixture()
def resources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_traffic(src)
    return {
        "settings": FlywheelSettings(home=str(tmp_path / "home"), source_kind="folder", source_path=str(src)),
        "curation": CurationSettings(
            topics=3, retain_fraction=0.8, eval_fraction=0.3, embed_backend="torch", history_start=DAY
        ),
    }


@pytest.mark.integration
def test_consolidation_day_end_to_end(resources, tmp_path):
    result = dg.materialize([ingest, *CURATION_ASSETS], partition_key=DAY, resources=resources)
    assert result.success
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    failed = {k: c.description for k, c in checks.items() if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR}
    assert not failed, failed
    assert ("prompts", "split_disjoint") in checks and ("unique_prompts", "conservation") in checks

    lake = Lake(tmp_path / "home")
    day = date.fromisoformat(DAY)
    pool = lake.read("prompts", day)
    assert pool.height > 0
    assert set(pool["split"].unique()) <= {"train", "eval_internal", "eval_user"}
    assert pool["cluster_id"].null_count() == 0
    assert not pool["text"].str.contains("jane.doe@example.com").any()  # PII never reaches prompts
    # every static prompt is in the pool or dropped with a reason
    static = lake.read("static_prompts", day)
    drops = lake.read("drops", day)
    accounted = set(pool["prompt_id"]) | set(drops.filter(pl.col("stage") != "prompts")["row_id"])
    assert set(static["prompt_id"]) <= accounted
    assert lake.read("clusters", day).height == 3
    assert (tmp_path / "home" / "reports" / "topics" / f"{DAY}.png").stat().st_size > 1000

    # the day's quality report renders offline from the lake
    report = tmp_path / "home" / "reports" / "quality" / DAY / "index.html"
    assert dg.materialize([quality_report], partition_key=DAY, resources=resources).success
    html = report.read_text()
    assert "Pipeline flow" in html and "semantic_dedup" in html and "http://" not in html

    # a second run re-embeds nothing and gives the same pool: every curation step finds its inputs,
    # settings and code unchanged, reports the same data version and does no work
    first = {m.asset_key.to_user_string(): m.materialization for m in result.get_asset_materialization_events()}
    again = dg.materialize([ingest, *CURATION_ASSETS], partition_key=DAY, resources=resources)
    for m in again.get_asset_materialization_events():
        name = m.asset_key.to_user_string()
        if name in {a.key.to_user_string() for a in CURATION_ASSETS}:
            assert m.materialization.metadata["unchanged"].value is True, name
            assert m.materialization.tags["dagster/data_version"] == first[name].tags["dagster/data_version"]
    assert lake.read("prompts", day).equals(pool)
    report_again = dg.materialize([quality_report], partition_key=DAY, resources=resources)
    assert report_again.get_asset_materialization_events()[0].materialization.metadata["unchanged"].value is True
    # a changed setting is a changed input: the steps after it run again
    curation = resources["curation"]
    changed = CurationSettings(**{**curation.model_dump(), "retain_fraction": 0.5})
    third = dg.materialize(CURATION_ASSETS, partition_key=DAY, resources={**resources, "curation": changed})
    events = third.get_asset_materialization_events()
    assert {m.asset_key.to_user_string() for m in events if "unchanged" not in m.materialization.metadata} == {
        "prompts"
    }


def test_failing_blocking_check_stops_downstream(resources, tmp_path):
    lake = Lake(tmp_path / "home")
    day = date.fromisoformat(DAY)
    bad = pl.DataFrame(
        [
            {
                "message_id": "m",
                "conversation_id": "c",
                "turn_index": 0,
                "role": "wizard",
                "text": None,
                "ts": None,
                "user_hash": "u",
                "character_id": "x",
                "source": "elsewhere",
                "served_by": None,
                "surface": "chat",
                "feedback": None,
                "day": day,
            }
        ]
        * 3,
        schema=schema.CONVERSATIONS,
    )
    lake.write("conversations", day, bad)  # a corrupted upstream partition
    result = dg.materialize(
        [scrubbed_conversations, static_prompts], partition_key=DAY, resources=resources, raise_on_error=False
    )
    checks = result.get_asset_check_evaluations()
    suite = [c for c in checks if c.asset_key.to_user_string() == "scrubbed_conversations"][0]
    assert not suite.passed and suite.severity == dg.AssetCheckSeverity.ERROR
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "static_prompts" not in materialized
    assert not lake.exists("static_prompts", day)


@pytest.mark.integration
def test_second_day_dedups_across_days_and_reports_drift(resources, tmp_path):
    src = tmp_path / "src"
    day2 = "2026-01-06"
    write_traffic(src, n_conversations=40, day=day2, offset=30)  # 30 conversations repeat day 1's
    everything = [ingest, *CURATION_ASSETS, quality_report]
    for day in (DAY, day2):
        assert dg.materialize(everything, partition_key=day, resources=resources).success
    lake = Lake(tmp_path / "home")
    drops = lake.read("drops", date.fromisoformat(day2))
    cross = drops.filter(pl.col("kept_id").str.starts_with("seen:"))
    assert cross.height > 0  # prompts already seen on day 1 are dropped on day 2
    summary = (tmp_path / "home" / "reports" / "quality" / day2 / "summary.md").read_text()
    assert "Length PSI" in summary and "| Length PSI | — |" not in summary
    assert "| Cluster PSI | — |" not in summary


def test_a_day_whose_previous_day_is_missing_is_refused(resources):
    # the history starts on DAY; 2026-01-07 cannot be deduplicated before DAY and 2026-01-06 are
    result = dg.materialize([deduped_prompts], partition_key="2026-01-07", resources=resources, raise_on_error=False)
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    message = error.message + (error.cause.message if error.cause else "")
    assert "missing: 2026-01-05, 2026-01-06 (2 days)" in message


def test_cross_day_assets_depend_on_their_previous_day():
    graph = defs.resolve_asset_graph()
    for name in ("deduped_prompts", "unique_prompts"):
        key = dg.AssetKey(name)
        assert key in graph.get(key).parent_keys
        assert graph.get(key).code_version


def test_a_day_waits_while_its_previous_day_is_in_flight(resources):
    # a job backfill queues every day at once: 2026-01-06 is queued when 2026-01-07 starts
    instance = dg.DagsterInstance.ephemeral()
    instance.create_run_for_job(defs.resolve_job_def("consolidation"), tags={"dagster/partition": "2026-01-06"})
    curation = CurationSettings(
        **{**resources["curation"].model_dump(), "previous_day_wait_s": 0, "previous_day_retries": 2}
    )
    result = dg.materialize(
        [deduped_prompts],
        partition_key="2026-01-07",
        resources={**resources, "curation": curation},
        instance=instance,
        raise_on_error=False,
    )
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 2 and not result.success  # waited twice, then gave up (the day never came)
