import json
import re
from datetime import date

import dagster as dg
import pytest

from assets.definitions import defs
from assets.ingest import ingest
from assets.resources import FlywheelSettings
from pipeline.lake import Lake

DAY = "2026-01-05"


def test_definitions_load_and_name_the_job_and_schedule():
    job = defs.resolve_job_def("consolidation")
    assert job.partitions_def is not None
    schedule = defs.resolve_schedule_def("consolidation_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"conversations", "quarantine"} <= keys
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name and node.description, key


def _folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = [
        {"conversation_id": "c1", "role": "user", "text": "hello", "ts": f"{DAY}T08:00:00Z", "user_id": "alice"},
        {"conversation_id": "c1", "role": "assistant", "text": "hi!", "ts": f"{DAY}T08:00:05Z"},
        {"conversation_id": "c2", "role": "bot", "text": "??", "ts": f"{DAY}T08:00:05Z"},
    ]
    (src / f"{DAY}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    return src


def test_ingest_materializes_one_partition_with_metadata_and_check(tmp_path):
    settings = FlywheelSettings(home=str(tmp_path / "home"), source_kind="folder", source_path=str(_folder(tmp_path)))
    result = dg.materialize([ingest], partition_key=DAY, resources={"settings": settings})
    assert result.success
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    conv_meta = mats["conversations"].materialization.metadata
    assert conv_meta["dagster/row_count"].value == 2
    quar_meta = mats["quarantine"].materialization.metadata
    assert quar_meta["dagster/row_count"].value == 2
    reasons = {r.data["reason"] for r in quar_meta["by_reason"].value.records}
    assert {"unknown_role", "invalid_json"} <= reasons
    checks = result.get_asset_check_evaluations()
    assert sorted((c.asset_key.to_user_string(), c.check_name) for c in checks) == [
        ("conversations", "conservation"),
        ("conversations", "suite"),
        ("quarantine", "suite"),
    ]
    assert all(c.passed for c in checks if c.check_name == "conservation")
    lake = Lake(tmp_path / "home")
    assert lake.read("conversations", date.fromisoformat(DAY)).height == 2

    # re-materializing replaces the partition rather than appending
    assert dg.materialize([ingest], partition_key=DAY, resources={"settings": settings}).success
    assert lake.query("SELECT count(*) AS n FROM conversations")["n"][0] == 2


def test_conversations_alone_can_be_selected(tmp_path):
    settings = FlywheelSettings(home=str(tmp_path / "home"), source_kind="folder", source_path=str(_folder(tmp_path)))
    result = dg.materialize([ingest], selection="conversations", partition_key=DAY, resources={"settings": settings})
    assert result.success
    assert [m.asset_key.to_user_string() for m in result.get_asset_materialization_events()] == ["conversations"]


def test_default_chitchat_partition_in_process(tmp_path):
    settings = FlywheelSettings(home=str(tmp_path / "home"))
    result = dg.materialize([ingest], partition_key="2026-01-13", resources={"settings": settings})
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert Lake(tmp_path / "home").read("conversations", date(2026, 1, 13)).height > 1000


def test_bad_setting_fails_fast_naming_it(tmp_path):
    settings = FlywheelSettings(home=str(tmp_path / "home"), source_kind="folder", source_path=str(tmp_path / "nope"))
    with pytest.raises(Exception, match="source `path`"):
        dg.materialize([ingest], partition_key=DAY, resources={"settings": settings})


def test_user_salt_is_a_secret_nowhere_in_the_event_log_run_config_or_lake(tmp_path, monkeypatch):
    import polars as pl

    from assets.curation import scrubbed_conversations, static_prompts

    secret = "s3cret-salt-4f9c2e1b7a"
    monkeypatch.setenv("FLYWHEEL_USER_SALT", secret)
    home = tmp_path / "home"
    settings = FlywheelSettings(
        home=str(home),
        source_kind="folder",
        source_path=str(_folder(tmp_path)),
        user_salt=dg.EnvVar("FLYWHEEL_USER_SALT"),
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [ingest, scrubbed_conversations, static_prompts],
        partition_key=DAY,
        resources={"settings": settings},
        instance=instance,
    )
    assert result.success
    # the salt was used: the user hash is the one that salt gives
    from pipeline import schema
    from pipeline.schema import UserHasher

    users = Lake(home).read("conversations", date.fromisoformat(DAY))["user_hash"].drop_nulls().unique().to_list()
    assert UserHasher(secret)("alice") in users and UserHasher(schema.DEMO_SALT)("alice") not in users

    run = instance.get_run_by_id(result.run_id)
    assert secret not in dg.serialize_value(run.run_config)
    for entry in instance.all_logs(result.run_id):
        assert secret not in dg.serialize_value(entry)
    for path in home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
            if path.suffix == ".parquet":
                assert secret not in pl.read_parquet(path).write_ndjson(), path  # decompressed too
    # the code location passes the salt as a reference to its variable, never as a value
    from assets.resources import user_salt_env

    assert isinstance(user_salt_env(), dg.EnvVar) and user_salt_env() == "FLYWHEEL_USER_SALT"


def test_a_day_of_every_bad_input_class_succeeds_through_the_assets(tmp_path):
    from tests.pipeline.bad_inputs import DAY as BAD_DAY
    from tests.pipeline.bad_inputs import LIMITS, write_bad_day

    cases, _ = write_bad_day(tmp_path / "src", tmp_path / "outside")
    settings = FlywheelSettings(
        home=str(tmp_path / "home"), source_kind="folder", source_path=str(tmp_path / "src"), **LIMITS
    )
    result = dg.materialize([ingest], partition_key=BAD_DAY.isoformat(), resources={"settings": settings})
    assert result.success
    conservation = [c for c in result.get_asset_check_evaluations() if c.check_name == "conservation"]
    assert conservation and all(c.passed for c in conservation)
    mats = {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}
    listed = {
        (r.data["source_file"], r.data["reason_code"]) for r in mats["quarantine"]["unread_file_list"].value.records
    }
    assert listed == {(c.file, c.code) for c in cases if c.line == 0}
    assert mats["conversations"]["unread_files"].value == len(listed)
    quarantine = Lake(tmp_path / "home").read("quarantine", BAD_DAY)
    assert set(quarantine["reason_code"]) >= {c.code for c in cases}


HOSTILE_NAMES = [
    "evil\n**All files were read, nothing quarantined** [details](javascript:alert(1))\n.csv",
    "<img src=x onerror=alert(2)>.csv",
    "[a](javascript:alert(3)) | forged | cell |.jsonl",
]
HOSTILE_VALUES = ["<img src=x onerror=alert(4)>", "[c](javascript:alert(5))", "<script>alert(6)</script> **b**"]


def _rendered(markdown: str) -> str:
    from markdown_it import MarkdownIt

    # raw HTML allowed, as a permissive renderer would: only the escaping keeps it out
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


def _assert_inert(html: str) -> None:
    for live in ("<a ", "<img", "<script", "javascript:alert(1)</a", "<strong>All files"):
        assert live not in html, (live, html)


def test_hostile_file_names_and_values_render_inert_in_metadata_and_summary(tmp_path):
    from quality.daily import gather
    from quality.report import build_markdown

    src = tmp_path / "src"
    day_dir = src / f"day={DAY}"
    day_dir.mkdir(parents=True)
    for name in HOSTILE_NAMES:
        (day_dir / name).write_bytes(b"")
    rows = [
        {
            "conversation_id": f"c{i}",
            "role": "user",
            "text": value,
            "character_id": value,
            "surface": value,
            "ts": f"{DAY}T08:00:0{i}Z",
            "user_id": "u",
        }
        for i, value in enumerate(HOSTILE_VALUES)
    ]
    (day_dir / "traffic.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n" + json.dumps(rows[0] | {"role": "x"})
    )
    settings = FlywheelSettings(home=str(tmp_path / "home"), source_kind="folder", source_path=str(src))
    result = dg.materialize([ingest], partition_key=DAY, resources={"settings": settings})
    assert result.success
    entries = [
        *(v for m in result.get_asset_materialization_events() for v in m.materialization.metadata.values()),
        *(v for c in result.get_asset_check_evaluations() for v in c.metadata.values()),
    ]
    tables = [v for v in entries if isinstance(v, dg.TableMetadataValue)]
    cells = [str(x) for t in tables for r in t.records for x in r.data.values() if isinstance(x, str)]
    assert any("onerror" in c for c in cells)  # the hostile values did reach the tables, as text
    assert all(c.isprintable() for c in cells)  # on one line: no forged row, no bidi or zero-width character
    for v in entries:
        if isinstance(v, dg.MarkdownMetadataValue):
            _assert_inert(_rendered(v.md_str))
    # the quality summary the report asset publishes as markdown
    summary = build_markdown(gather(Lake(tmp_path / "home"), date.fromisoformat(DAY)))
    html = _rendered(summary)
    _assert_inert(html)
    assert "onerror=alert(2)" in html and "javascript:alert(1)" in html  # shown, as text
    unread = summary.split("**Files not read**", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    assert len(unread) == 2 + len(HOSTILE_NAMES)  # header, rule, one row per file: no forged line or row
    assert all(len(re.split(r"(?<!\\)\|", line)) == 4 for line in unread[2:])  # two cells a row
