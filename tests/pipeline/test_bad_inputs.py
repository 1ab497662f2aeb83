"""A day of every class of bad input: each lands in quarantine under its own code, nothing fails the day,
and read = accepted + quarantined."""

import time
import tracemalloc

import polars as pl
import pytest

from pipeline import schema
from pipeline.ingest import FILE_REASON_CODES, REASON_CODES, IngestConfig, ingest_day
from pipeline.source_config import SourceConfig, SourceConfigError
from pipeline.sources import read_day
from tests.pipeline.bad_inputs import BOMB_BYTES, DAY, LIMITS, LINES_FILE, write_bad_day

H = schema.UserHasher("s")


def cids(*raw: str) -> set[str]:
    """The stored ids of conversations `raw`, each sent by its own `user-<id>`."""
    return {H.pseudonym("c", H(f"user-{c}"), c) for c in raw}


@pytest.fixture(scope="module")
def bad_day(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    cases, accepted = write_bad_day(root / "src", root / "outside")
    cfg = SourceConfig(kind="folder", path=str(root / "src"), **LIMITS)
    result = ingest_day(read_day(cfg, DAY), DAY, IngestConfig(), H)
    return cases, accepted, result


def test_at_least_25_classes_each_under_its_own_code(bad_day):
    cases, _, result = bad_day
    assert len(cases) >= 25
    q = result.quarantine
    for case in cases:
        at = pl.col("line").is_between(case.line, case.line + case.span - 1)
        rows = q.filter((pl.col("source_file") == case.file) & at)
        assert rows["reason_code"].to_list() == [case.code] * case.records, case.name
    # every reason code but the day's byte limit (tested on its own) is planted
    assert set(q["reason_code"]) == set(REASON_CODES) - {"day_too_large"}


def test_conservation_holds_and_good_records_are_kept(bad_day):
    _, accepted, result = bad_day
    assert result.records_read == result.conversations.height + result.quarantine.height
    conv = result.conversations
    assert conv.schema == schema.SCRUBBED_CONVERSATIONS  # the contract plus `pii_types` (scrubbed at ingest)
    cut = cids(*(f"gz-{k}" for k in range(200)), *(f"big-{k}" for k in range(4000)))
    lines_and_bom = conv.filter(~pl.col("conversation_id").is_in(cut))
    assert lines_and_bom.height == accepted
    kept = cids("good-0", "good-1", "good-2", "bom-first", "plain")
    kept |= {H.pseudonym("c", H(u), c) for c, u in (("c-dup", "u9"), ("c-order", "u8"))}
    assert kept <= set(conv["conversation_id"])
    # null ids never merge two users' conversations
    assert conv["conversation_id"].null_count() == 0 and not conv["conversation_id"].str.strip_chars().eq("").any()


def test_cut_files_keep_what_was_read_before_the_break(bad_day):
    _, _, result = bad_day
    conv, q = result.conversations, result.quarantine
    gz = conv.filter(pl.col("conversation_id").is_in(cids(*(f"gz-{k}" for k in range(200)))))
    assert 0 < gz.height < 600  # some of its 600 lines, not all
    detail = q.filter(pl.col("reason_code") == "truncated_file")["detail"][0]
    assert "lines before the break are kept" in detail and "EOFError" in detail
    big = conv.filter(pl.col("conversation_id").is_in(cids(*(f"big-{k}" for k in range(4000)))))
    assert 0 < big.height < 12_000
    details = q.filter(pl.col("reason_code") == "file_too_large")["detail"].to_list()
    assert all(f"longer than {LIMITS['max_file_bytes']} bytes" in d for d in details)


def test_refused_files_are_never_read(bad_day):
    _, _, result = bad_day
    q = result.quarantine
    assert not q["raw"].str.contains("outside-user-77|outside secret").any()
    assert not result.conversations["conversation_id"].is_in(cids("hidden", "inner")).any()
    # file-level rows are at line 0, with an empty payload when nothing was read
    files = q.filter(pl.col("reason_code").is_in(FILE_REASON_CODES))
    assert (files["line"] == 0).all()
    # the linked-to file was read once, as itself, not again through the link
    assert (
        q.filter(pl.col("source_file") == LINES_FILE).height
        == q.filter(pl.col("source_file").str.ends_with("a-lines.jsonl")).height
    )


def test_gzip_bomb_is_read_in_bounded_chunks(tmp_path):
    from tests.pipeline.bad_inputs import _gzip_bomb

    day_dir = tmp_path / f"day={DAY}"
    day_dir.mkdir()
    (day_dir / "bomb.jsonl.gz").write_bytes(_gzip_bomb())
    cfg = SourceConfig(kind="folder", path=str(tmp_path), **LIMITS)
    tracemalloc.start()
    t0 = time.perf_counter()
    records = list(read_day(cfg, DAY))
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [r.error[0] for r in records] == ["file_too_large"]
    assert peak < 8 * LIMITS["max_line_bytes"] < BOMB_BYTES // 16  # the line was never held whole
    assert elapsed < 10


def test_day_byte_limit_stops_the_later_files(tmp_path):
    from tests.pipeline.bad_inputs import good_lines

    day_dir = tmp_path / f"day={DAY}"
    day_dir.mkdir()
    for name in ("a", "b", "c"):
        (day_dir / f"{name}.jsonl").write_bytes(b"\n".join(good_lines(f"{name}-{k}")[0] for k in range(1000)) + b"\n")
    size = (day_dir / "a.jsonl").stat().st_size
    cfg = SourceConfig(
        kind="folder", path=str(tmp_path), max_line_bytes=1024, max_file_bytes=size, max_day_bytes=size + size // 2
    )
    res = ingest_day(read_day(cfg, DAY), DAY, IngestConfig(), schema.UserHasher("s"))
    q = res.quarantine.filter(pl.col("line") == 0)
    assert q.select("source_file", "reason_code").rows() == [
        (f"day={DAY}/b.jsonl", "day_too_large"),
        (f"day={DAY}/c.jsonl", "day_too_large"),
    ]
    assert "max_day_bytes" in q["detail"][0] and "max_day_bytes" in q["detail"][1]
    assert 1000 < res.conversations.height < 2000  # a whole, and half of b
    assert res.records_read == res.conversations.height + res.quarantine.height


def test_symlinked_day_folder_is_refused(tmp_path):
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    (elsewhere / "x.jsonl").write_text(
        '{"conversation_id": "c", "role": "user", "text": "hi", "ts": "2026-01-05T10:00:00Z"}'
    )
    (src / f"day={DAY}").symlink_to(elsewhere)
    res = ingest_day(
        read_day(SourceConfig(kind="folder", path=str(src)), DAY), DAY, IngestConfig(), schema.UserHasher("s")
    )
    assert res.conversations.is_empty()
    assert res.quarantine.select("source_file", "reason_code").rows() == [(f"day={DAY}", "outside_source")]


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"max_line_bytes": 0}, "max_line_bytes"),
        ({"max_file_bytes": -1}, "max_file_bytes"),
        ({"max_day_bytes": "big"}, "max_day_bytes"),
        ({"max_json_depth": 100_000}, "max_json_depth"),
        ({"max_int_digits": 5_000}, "max_int_digits"),
        ({"max_line_bytes": 10, "max_file_bytes": 5, "max_day_bytes": 20}, "max_line_bytes"),
    ],
)
def test_bad_limits_fail_fast_naming_the_setting(kwargs, setting):
    with pytest.raises(SourceConfigError, match=setting):
        SourceConfig(**kwargs)


def test_limits_reach_the_reader_from_the_resource(tmp_path):
    from assets.resources import FlywheelSettings

    settings = FlywheelSettings(home=str(tmp_path), source_kind="folder", source_path=str(tmp_path), **LIMITS)
    cfg = settings.source_config()
    assert {k: getattr(cfg, k) for k in LIMITS} == LIMITS
    with pytest.raises(SourceConfigError, match="max_json_depth"):
        FlywheelSettings(home=str(tmp_path), max_json_depth=0).source_config()
