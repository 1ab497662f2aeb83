import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline import schema
from pipeline.ingest import FILE_REASON_CODES, REASON_CODES, IngestConfig, ingest_day
from pipeline.privacy_config import PrivacyConfig
from pipeline.source_config import SourceConfig
from pipeline.sources import read_day

DAY = date(2026, 1, 5)
NEWER_RECORD_CODES = {
    "stray_bom",
    "line_too_long",
    "nesting_too_deep",
    "int_too_long",
    "empty_id",
    "out_of_range",
    "id_too_long",
    "id_chars",
    "ambiguous_user",
    "lone_surrogate",
}
T = "2026-01-05T10:00:{:02d}Z"
H = schema.UserHasher("s")


def cid(raw: str, user: str | None = None) -> str:
    """The stored id of conversation `raw` of `user` (the tests' own `user-<id>` when None)."""
    return H.pseudonym("c", H(user or f"user-{raw}"), raw)


def msg(cid, i, role, text, sec=None, **kw):
    return {
        "conversation_id": cid,
        "turn_index": i,
        "role": role,
        "text": text,
        "ts": T.format(sec if sec is not None else i),
        "user_id": f"user-{cid}",
        **kw,
    }


def good_conversation(cid: str) -> list[dict]:
    return [
        msg(cid, 0, "user", "hi there"),
        msg(cid, 1, "assistant", "hello! how are you?"),
        msg(cid, 2, "user", "great, thanks"),
    ]


# each bad line, the reason it must get, and how many records it holds
BAD_LINES: list[tuple[bytes, str, int]] = [
    (b'{"conversation_id": "x", "role": "user", "text": "unterminated', "invalid_json", 1),
    (b'{"conversation_id": "x", "role": "user", "text": "caf\xe9", "ts": "2026-01-05T10:00:00Z"}', "invalid_utf8", 1),
    (json.dumps({"role": "user", "text": "no conversation", "ts": T.format(1)}).encode(), "missing_field", 1),
    (json.dumps(msg("c-type", 0, "user", 42)).encode(), "wrong_type", 1),
    (json.dumps(msg("c-role", 0, "moderator", "I am a moderator")).encode(), "unknown_role", 1),
    (json.dumps(msg("c-empty", 0, "user", "   \n\t ")).encode(), "empty_text", 1),
    (json.dumps(msg("c-long", 0, "user", "x" * 501)).encode(), "text_too_long", 1),
    (json.dumps(msg("c-ctrl", 0, "user", "nul \x00 inside")).encode(), "control_chars", 1),
    (json.dumps(msg("c-ctrl", 1, "user", "bell \x07 inside")).encode(), "control_chars", 1),
    (
        json.dumps(msg("c-late", 0, "user", "from tomorrow") | {"ts": "2026-01-06T12:00:00Z"}).encode(),
        "ts_outside_day",
        1,
    ),
    (
        json.dumps(msg("c-early", 0, "user", "from yesterday") | {"ts": "2026-01-04T23:59:59Z"}).encode(),
        "ts_outside_day",
        1,
    ),
    (json.dumps(msg("c-badts", 0, "user", "when?") | {"ts": "yesterday-ish"}).encode(), "wrong_type", 1),
    (json.dumps({"messages": []}).encode(), "empty_conversation", 1),
    (json.dumps({"messages": "hello"}).encode(), "wrong_type", 1),
    (json.dumps(["a", "list"]).encode(), "wrong_type", 1),
    (
        json.dumps(
            {"conversation_id": "c-src", "role": "user", "text": "hi", "ts": T.format(0), "source": "partner"}
        ).encode(),
        "bad_value",
        1,
    ),
]


def write_day_file(folder: Path) -> Path:
    lines: list[bytes] = []
    for k in range(3):
        lines += [json.dumps(m).encode() for m in good_conversation(f"good-{k}")]
    lines += [b for b, _, _ in BAD_LINES]
    # a duplicate message id inside one conversation (messages format)
    lines.append(
        json.dumps(
            {
                "conversation_id": "c-dup",
                "user_id": "u9",
                "ts": T.format(0),
                "messages": [
                    {"id": "m1", "role": "user", "content": "first"},
                    {"id": "m1", "role": "assistant", "content": "same id again"},
                    {"id": "m2", "role": "assistant", "content": "fine"},
                ],
            }
        ).encode()
    )
    # timestamps out of order (messages format with per-message ts)
    lines.append(
        json.dumps(
            {
                "conversation_id": "c-order",
                "messages": [
                    {"role": "user", "content": "one", "ts": T.format(30)},
                    {"role": "assistant", "content": "two", "ts": T.format(10)},
                    {"role": "assistant", "content": "three", "ts": T.format(40)},
                ],
            }
        ).encode()
    )
    # a conversation with no user turn (canonical lines)
    lines.append(json.dumps(msg("c-nouser", 0, "assistant", "anyone there?")).encode())
    lines.append(json.dumps(msg("c-nouser", 1, "system", "be nice")).encode())
    lines.append(b"")  # a blank line is layout, not a record
    path = folder / f"traffic-{DAY.isoformat()}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    write_day_file(tmp_path)
    return tmp_path


def run(folder: Path, **kw):
    cfg = SourceConfig(kind="folder", path=str(folder))
    return ingest_day(read_day(cfg, DAY), DAY, IngestConfig(max_text_chars=500, **kw), schema.UserHasher("s"))


def test_mixed_file_every_bad_class_quarantined_with_its_code(mixed_folder):
    res = run(mixed_folder)
    q = res.quarantine
    expected_records = 9 + sum(n for *_, n in BAD_LINES) + 3 + 3 + 2
    assert res.records_read == expected_records
    assert res.records_read == res.conversations.height + q.height  # conservation

    by_line = {ln: code for ln, code in zip(q["line"].to_list(), q["reason_code"].to_list())}
    for offset, (_, code, _) in enumerate(BAD_LINES):
        assert by_line[10 + offset] == code, f"line {10 + offset}"
    codes = q["reason_code"].to_list()
    assert codes.count("duplicate_message_id") == 1
    assert codes.count("ts_out_of_order") == 1
    assert codes.count("no_user_turn") == 2
    # the record-level codes this file plants; tests/pipeline/test_bad_inputs.py covers every code
    earlier = set(REASON_CODES) - set(FILE_REASON_CODES) - NEWER_RECORD_CODES
    assert set(codes) == earlier, earlier - set(codes)
    # every quarantine row says where it came from and keeps the payload
    assert q["source_file"].unique().to_list() == [f"traffic-{DAY.isoformat()}.jsonl"]
    assert q.filter(pl.col("raw") == "").is_empty()
    assert "caf\\xe9" in q.filter(pl.col("reason_code") == "invalid_utf8")["raw"][0]


def test_accepted_rows_follow_the_contract(mixed_folder):
    conv = run(mixed_folder).conversations
    # the contract, plus the PII types scrubbing at ingest replaced in each row
    assert conv.schema == schema.SCRUBBED_CONVERSATIONS
    # a conversation without a user id counts as its own user
    assert set(conv["conversation_id"]) == {
        *(cid(f"good-{k}") for k in range(3)),
        cid("c-dup", "u9"),
        cid("c-order", "c-order"),
    }
    dup = cid("c-dup", "u9")
    assert conv.filter(pl.col("conversation_id") == dup)["message_id"].to_list() == [
        H.pseudonym("m", dup, "m1"),
        H.pseudonym("m", dup, "m2"),
    ]
    assert (conv["day"] == DAY).all()
    assert not conv["user_hash"].str.contains("user-").any()  # raw ids never reach the lake
    assert conv.filter(pl.col("role") == "assistant")["served_by"].null_count() == 0
    assert (
        conv.filter(pl.col("role") == "user")["served_by"].null_count() == conv.filter(pl.col("role") == "user").height
    )


def test_reingest_is_identical(mixed_folder):
    a, b = run(mixed_folder), run(mixed_folder)
    assert a.conversations.equals(b.conversations)
    assert a.quarantine.equals(b.quarantine)


def test_late_grace_keeps_conversations_that_cross_midnight(tmp_path):
    rows = [msg("c", 0, "user", "late night"), msg("c", 1, "assistant", "still up?") | {"ts": "2026-01-06T00:30:00Z"}]
    (tmp_path / f"{DAY}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert run(tmp_path).conversations.height == 2
    assert run(tmp_path, late_grace_minutes=0).quarantine["reason_code"].to_list() == ["ts_outside_day"]


def test_messages_format_with_metadata(tmp_path):
    day_dir = tmp_path / f"day={DAY}"
    day_dir.mkdir()
    (day_dir / "part.jsonl").write_text(
        json.dumps(
            {
                "id": "conv-7",
                "user_id": "alice",
                "character_id": "pirate",
                "source": "internal",
                "ts": T.format(5),
                "messages": [
                    {"role": "system", "content": "You are a pirate."},
                    {"role": "user", "content": "ahoy"},
                    {"role": "assistant", "content": "Arr!", "feedback": "love", "served_by": "gen-3"},
                ],
            }
        )
    )
    conv = run(tmp_path).conversations
    assert conv["conversation_id"].unique().to_list() == [cid("conv-7", "alice")]
    assert conv["role"].to_list() == ["system", "user", "assistant"]
    assert conv["character_id"].unique().to_list() == ["pirate"]
    assert conv["source"].unique().to_list() == ["internal"]
    assert conv["feedback"].to_list() == [None, None, "love"]
    assert conv["served_by"].to_list() == [None, None, "gen-3"]
    assert conv["turn_index"].to_list() == [0, 1, 2]


def test_parquet_files_are_read_like_jsonl(tmp_path):
    rows = good_conversation("pq") + [msg("pq", 3, "wizard", "bad role")]
    pl.DataFrame(rows).write_parquet(tmp_path / f"{DAY}.parquet")
    res = run(tmp_path)
    assert res.conversations.height == 3
    assert res.quarantine["reason_code"].to_list() == ["unknown_role"]
    assert res.quarantine["line"].to_list() == [4]


def test_empty_day_gives_empty_tables(tmp_path):
    res = run(tmp_path)
    assert res.records_read == 0
    assert res.conversations.schema == schema.SCRUBBED_CONVERSATIONS and res.conversations.is_empty()
    assert res.pii_counts["items"].sum() == 0 and res.scrub.rows_with_pii == 0
    assert res.quarantine.schema == schema.QUARANTINE and res.quarantine.is_empty()


def test_accepted_text_is_scrubbed_at_ingest_and_counted(tmp_path):
    rows = [
        msg("p", 0, "user", "mail jane.roe@example.org or call +1 415 555 0199, jane.roe@example.org"),
        msg("p", 1, "assistant", "noted, @sam will write"),
        msg("p", 2, "user", "thanks"),
    ]
    (tmp_path / f"{DAY}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    res = run(tmp_path)
    conv = res.conversations
    assert conv["text"].to_list() == ["mail [EMAIL] or call [PHONE], [EMAIL]", "noted, [HANDLE] will write", "thanks"]
    assert conv["pii_types"].to_list() == [["EMAIL", "PHONE"], ["HANDLE"], []]
    assert res.pii_by_type() == {"URL": 0, "EMAIL": 2, "IP": 0, "CARD": 0, "PHONE": 1, "HANDLE": 1}
    assert (res.scrub.rows_in, res.scrub.rows_with_pii, res.scrub.pii_items) == (3, 2, 4)
    # the same settings as the scrubbing step: a type left out is kept, in accepted and quarantined text alike
    rows.append(msg("p", 3, "wizard", "call +1 415 555 0199"))
    (tmp_path / f"{DAY}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    only_email = PrivacyConfig(types=("EMAIL",))
    cfg = SourceConfig(kind="folder", path=str(tmp_path))
    res = ingest_day(read_day(cfg, DAY), DAY, IngestConfig(), schema.UserHasher("s"), only_email)
    assert res.conversations["text"][0] == "mail [EMAIL] or call +1 415 555 0199, [EMAIL]"
    assert "+1 415 555 0199" in res.quarantine["raw"][0]
    assert res.pii_by_type() == {"EMAIL": 2}


def test_reason_codes_are_documented():
    import pipeline.ingest as ingest

    for code in REASON_CODES:
        assert code in ingest.__doc__


def test_bad_ingest_setting_fails_fast():
    with pytest.raises(ValueError, match="max_text_chars"):
        IngestConfig(max_text_chars=0)
