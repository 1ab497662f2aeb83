"""Files are read by what they hold, not by their name: gzip by its magic bytes, UTF-16 / UTF-32 by their mark (or
zero bytes), a JSON array record by record, CR-only line ends as lines, suffixes in any case; an empty file is
a file-level row."""

import gzip
import json
from datetime import date

import polars as pl
import pytest

from pipeline import schema
from pipeline.ingest import IngestConfig, ingest_day
from pipeline.source_config import SourceConfig
from pipeline.sources import read_day

DAY = date(2026, 1, 5)


def conversation(cid: str, turns: int = 2) -> dict:
    return {
        "conversation_id": cid,
        "user_id": f"user-{cid}",
        "ts": f"{DAY}T10:00:00Z",
        "messages": [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(turns)],
    }


def lines(prefix: str, n: int) -> list[str]:
    return [json.dumps(conversation(f"{prefix}-{k}")) for k in range(n)]


def ingest(folder, **limits):
    cfg = SourceConfig(kind="folder", path=str(folder), **limits)
    res = ingest_day(read_day(cfg, DAY), DAY, IngestConfig(), schema.UserHasher("s"))
    assert res.records_read == res.conversations.height + res.quarantine.height
    return res


@pytest.mark.parametrize(
    ("name", "payload", "kept"),
    [
        ("dump.json", json.dumps([conversation(f"a-{k}") for k in range(3)], indent=2).encode(), 3),
        ("one-line.json", json.dumps([conversation(f"o-{k}") for k in range(3)]).encode(), 3),
        ("spread.jsonl", json.dumps([conversation(f"s-{k}") for k in range(2)], indent=1).encode(), 2),
        ("cr.jsonl", "\r".join(lines("cr", 4)).encode(), 4),
        ("crlf.jsonl", ("\r\n".join(lines("crlf", 3)) + "\r\n").encode(), 3),
        ("packed.jsonl", gzip.compress("\n".join(lines("gz", 5)).encode()), 5),
        ("packed.json", gzip.compress(json.dumps([conversation("gza")]).encode()), 1),
        ("utf16.jsonl", "\n".join(lines("u16", 2)).encode("utf-16"), 2),
        ("utf16be.jsonl", "\ufeff".encode("utf-16-be") + "\n".join(lines("u16be", 2)).encode("utf-16-be"), 2),
        ("utf32.jsonl", "\n".join(lines("u32", 2)).encode("utf-32"), 2),
        ("utf16-no-mark.jsonl", "\n".join(lines("u16n", 2)).encode("utf-16-le"), 2),
        ("UPPER.JSONL", "\n".join(lines("up", 2)).encode(), 2),
        ("Mixed.Json.GZ", gzip.compress(json.dumps([conversation("mx")]).encode()), 1),
    ],
)
def test_a_file_is_read_by_what_it_holds(tmp_path, name, payload, kept):
    day_dir = tmp_path / f"day={DAY}"
    day_dir.mkdir()
    (day_dir / name).write_bytes(payload)
    res = ingest(tmp_path)
    assert res.quarantine.is_empty(), res.quarantine.select("line", "reason_code", "detail").rows()
    assert res.conversations["conversation_id"].n_unique() == kept
    assert res.conversations.height == 2 * kept


def test_empty_files_are_listed_with_a_code(tmp_path):
    day_dir = tmp_path / f"day={DAY}"
    day_dir.mkdir()
    (day_dir / "zero.jsonl").write_bytes(b"")
    (day_dir / "zero.jsonl.gz").write_bytes(b"")
    (day_dir / "empty-stream.jsonl.gz").write_bytes(gzip.compress(b""))
    (day_dir / "blank.jsonl").write_bytes(b"\n \r\n\n")
    (day_dir / "empty-array.json").write_bytes(b"[ ]\n")
    pl.DataFrame(schema=schema.CONVERSATIONS).write_parquet(day_dir / "no-rows.parquet")
    q = ingest(tmp_path).quarantine
    assert q.select("source_file", "line", "reason_code").sort("source_file").rows() == [
        (f"day={DAY}/{name}", 0, "empty_file")
        for name in sorted(
            [
                "zero.jsonl",
                "zero.jsonl.gz",
                "empty-stream.jsonl.gz",
                "blank.jsonl",
                "empty-array.json",
                "no-rows.parquet",
            ]
        )
    ]


def test_an_array_is_read_under_the_same_limits(tmp_path):
    day_dir = tmp_path / f"day={DAY}"
    day_dir.mkdir()
    big = conversation("big") | {"pad": "x" * 5000}
    records = [conversation("a"), big, 7, conversation("b")]
    text = json.dumps(records, indent=2)
    (day_dir / "dump.json").write_text(text[: len(text) - 40])  # cut off inside the last record
    q = ingest(tmp_path, max_line_bytes=4096).quarantine
    assert q.select("line", "reason_code").rows() == [(2, "line_too_long"), (3, "wrong_type"), (4, "invalid_json")]
    # the byte limit of a file counts the array as it counts lines
    (day_dir / "dump.json").write_text(json.dumps([conversation(f"n-{k}") for k in range(200)]))
    res = ingest(tmp_path, max_line_bytes=4096, max_file_bytes=8192)
    assert res.quarantine.filter(pl.col("line") == 0)["reason_code"].to_list() == ["file_too_large"]
    assert 0 < res.conversations["conversation_id"].n_unique() < 200


def test_text_an_encoding_cannot_decode_is_a_cut_file(tmp_path):
    day_dir = tmp_path / f"day={DAY}"
    day_dir.mkdir()
    good = "\n".join(lines("u", 300)).encode("utf-16")
    (day_dir / "odd.jsonl").write_bytes(good + "\ud800".encode("utf-16-le", "surrogatepass") + b'\x00"')
    res = ingest(tmp_path)
    assert res.quarantine.filter(pl.col("line") == 0)["reason_code"].to_list() == ["truncated_file"]
    assert res.conversations["conversation_id"].n_unique() >= 299


def test_a_list_on_the_first_of_cr_only_lines_is_one_line_not_an_array(tmp_path):
    day_dir = tmp_path / f"day={DAY}"
    day_dir.mkdir()
    (day_dir / "cr.jsonl").write_bytes(("[1]\r" + "\r".join(lines("crl", 2))).encode())
    res = ingest(tmp_path)
    assert res.quarantine.select("line", "reason_code").rows() == [(1, "wrong_type")]
    assert res.conversations["conversation_id"].n_unique() == 2
