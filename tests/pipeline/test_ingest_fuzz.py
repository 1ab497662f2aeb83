"""Property-based: any folder day (random JSON shapes, types, Unicode, sizes, duplicate keys, id collisions,
encodings, line ends, compression, truncation) ingests without failing, conserves its records file by file,
keeps one user per conversation and stores none of its planted raw ids or PII."""

from datetime import date

import polars as pl
from hypothesis import given, settings

from pipeline import schema
from pipeline.ingest import IngestConfig, ingest_day
from pipeline.source_config import SourceConfig
from pipeline.sources import read_day
from tests.pipeline.fuzz_days import DAY, FUZZ_PROFILE, day_files, markers_in, write_day

H = schema.UserHasher("fuzz-salt-0123456789")


def _ingest(folder):
    cfg = SourceConfig(kind="folder", path=str(folder), max_line_bytes=64 << 10)
    return ingest_day(read_day(cfg, date.fromisoformat(DAY)), date.fromisoformat(DAY), IngestConfig(), H)


def _stored_text(res) -> str:
    frames = [res.conversations.drop("pii_types"), res.quarantine]
    return "\n".join(f.select(pl.col(pl.Utf8)).write_ndjson() for f in frames)


@settings(settings.get_profile(FUZZ_PROFILE))
@given(files=day_files)
def test_any_day_ingests_conserves_and_keeps_nothing_private(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("fuzz")
    write_day(root / "day", files)
    res = _ingest(root / "day")  # the day succeeds, whatever it holds
    assert res.records_read == res.conversations.height + res.quarantine.height
    # file by file: each file alone reads as many records as it does within the day, all accounted for
    alone = 0
    for k, f in enumerate(files):
        write_day(root / f"one-{k}", [f])
        one = _ingest(root / f"one-{k}")
        assert one.records_read == one.conversations.height + one.quarantine.height, f.name
        alone += one.records_read
    assert alone == res.records_read
    conv = res.conversations
    if conv.height:
        users = conv.group_by("conversation_id").agg(pl.col("user_hash").n_unique())
        assert (users["user_hash"] == 1).all()  # a conversation belongs to one user
        assert conv.select(pl.struct("conversation_id", "message_id").is_unique().all()).item()
    assert not markers_in(_stored_text(res))
