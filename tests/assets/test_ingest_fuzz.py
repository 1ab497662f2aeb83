"""Property-based, through the assets: any folder day the fuzzer writes materializes ingest, the scrubbed
table and the static prompts, and no planted raw id or PII is anywhere under FLYWHEEL_HOME or in the run's
events; no conversation of the lake holds two users."""

from datetime import date

import dagster as dg
import polars as pl
from hypothesis import given, settings

from assets.curation import CurationSettings, scrubbed_conversations, static_prompts
from assets.ingest import ingest
from assets.resources import FlywheelSettings
from pipeline.lake import Lake
from tests.pipeline.fuzz_days import ASSET_EXAMPLES, DAY, FUZZ_PROFILE, day_files, markers_in, write_day

SALT = "fuzz-salt-0123456789abcdef"


def _files_text(home) -> str:
    parts = []
    for path in sorted(home.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        parts.append(data.decode("utf-8", "replace"))
        if path.suffix == ".parquet":
            parts.append(pl.read_parquet(path).write_ndjson())
    return "\n".join(parts)


@settings(settings.get_profile(FUZZ_PROFILE), max_examples=ASSET_EXAMPLES)
@given(files=day_files)
def test_any_day_materializes_and_leaves_nothing_private(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("fuzz-assets")
    write_day(root / "src", files)
    home = root / "home"
    res = {
        "settings": FlywheelSettings(
            home=str(home), source_kind="folder", source_path=str(root / "src"), user_salt=SALT
        ),
        "curation": CurationSettings(history_start=DAY),
    }
    result = dg.materialize([ingest, scrubbed_conversations, static_prompts], partition_key=DAY, resources=res)
    assert result.success
    conservation = [c for c in result.get_asset_check_evaluations() if c.check_name == "conservation"]
    assert conservation and all(c.passed for c in conservation)
    conv = Lake(home).read("conversations", date.fromisoformat(DAY))
    if conv.height:
        assert (conv.group_by("conversation_id").agg(pl.col("user_hash").n_unique())["user_hash"] == 1).all()
    events = "\n".join(dg.serialize_value(e) for e in result.all_events)
    assert not markers_in(_files_text(home)), markers_in(_files_text(home))
    assert not markers_in(events), markers_in(events)
    assert SALT not in events
