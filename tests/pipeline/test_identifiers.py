"""Every identifier is untrusted: a set charset and length, pseudonymised or scrubbed before it is stored, one user
per conversation, and no value ingest derives itself fails the day."""

import json
from datetime import date

import polars as pl
import pytest

from pipeline import schema
from pipeline.ingest import IngestConfig, ingest_day
from pipeline.redact import Redactor
from pipeline.source_config import SourceConfig
from pipeline.sources import read_day

DAY = date(2026, 1, 5)
H = schema.UserHasher("s")


def msg(cid, role, text, sec=0, **kw) -> dict:
    return {"conversation_id": cid, "role": role, "text": text, "ts": f"{DAY}T10:00:{sec:02d}Z", **kw}


def conversation(cid, user, turns) -> dict:
    return {
        "conversation_id": cid,
        "user_id": user,
        "ts": f"{DAY}T10:00:00Z",
        "messages": [{"role": ("user", "assistant")[i % 2], "content": f"{user} turn {i}"} for i in range(turns)],
    }


def write(folder, name: str, records: list[dict]) -> None:
    day_dir = folder / f"day={DAY}"
    day_dir.mkdir(exist_ok=True)
    (day_dir / name).write_text("\n".join(json.dumps(r) for r in records) + "\n")


def ingest(folder, **kw):
    cfg = SourceConfig(kind="folder", path=str(folder))
    res = ingest_day(read_day(cfg, DAY), DAY, IngestConfig(**kw), H)
    assert res.records_read == res.conversations.height + res.quarantine.height
    return res


def test_an_implicit_turn_index_past_the_column_is_quarantined_not_a_failed_day(tmp_path):
    last = msg("c", "user", "at the end", turn_index=2_147_483_647, user_id="u")
    write(tmp_path, "a.jsonl", [last, msg("c", "assistant", "one more", sec=1, user_id="u")])
    res = ingest(tmp_path)
    assert res.conversations["turn_index"].to_list() == [2_147_483_647]
    assert res.quarantine.select("line", "reason_code").rows() == [(2, "out_of_range")]


def test_two_users_under_one_id_keep_two_conversations_across_files(tmp_path):
    write(tmp_path, "a.jsonl", [conversation("x-collide", "user-a", 2), msg(4242, "user", "number id", user_id="u1")])
    write(tmp_path, "b.jsonl", [conversation("x-collide", "user-b", 4), msg("4242", "user", "string id", user_id="u2")])
    res = ingest(tmp_path)
    conv = res.conversations
    assert res.quarantine.is_empty()
    per_conv = conv.group_by("conversation_id").agg(pl.len(), pl.col("user_hash").n_unique().alias("users"))
    assert (per_conv["users"] == 1).all()  # a conversation belongs to one user
    assert sorted(per_conv["len"].to_list()) == [1, 1, 2, 4]
    expected = {H.pseudonym("c", H(u), c) for c, u in [("x-collide", "user-a"), ("x-collide", "user-b")]}
    expected |= {H.pseudonym("c", H(u), "4242") for u in ("u1", "u2")}
    assert set(conv["conversation_id"]) == expected
    # the same user's number and string ids name the same conversation
    write(tmp_path, "c.jsonl", [msg("4242", "assistant", "reply", sec=1, user_id="u1")])
    again = ingest(tmp_path).conversations
    assert again.filter(pl.col("conversation_id") == H.pseudonym("c", H("u1"), "4242")).height == 2


def test_a_message_naming_no_user_joins_the_one_user_of_its_id(tmp_path):
    write(
        tmp_path,
        "a.jsonl",
        [msg("c1", "user", "hi", user_id="alice"), msg("c1", "assistant", "hello", sec=1)],
    )
    conv = ingest(tmp_path).conversations
    assert conv["user_hash"].to_list() == [H("alice")] * 2
    assert conv["conversation_id"].n_unique() == 1


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("conversation_id", "c\x00nul", "id_chars"),
        ("character_id", "pirate\x1b[31m", "id_chars"),
        ("surface", "app\x07", "id_chars"),
        ("character_id", "pi\u202erate", "id_chars"),
        ("message_id", "m\u200b1", "id_chars"),
        ("served_by", "gen\n2", "id_chars"),
        ("user_id", "alice\u2028", "id_chars"),
        ("character_id", "p" * 200_000, "id_too_long"),
        ("conversation_id", "c" * 100_000, "id_too_long"),
        ("user_id", "u" * 257, "id_too_long"),
    ],
)
def test_identifiers_have_a_charset_and_a_length(tmp_path, field, value, code):
    record = msg("c", "assistant" if field == "served_by" else "user", "hi", user_id="u") | {field: value}
    write(tmp_path, "a.jsonl", [record])
    res = ingest(tmp_path)
    assert res.quarantine["reason_code"].to_list() == [code]
    assert f"`{field}`" in res.quarantine["detail"][0]
    assert value not in res.quarantine["detail"][0] and value not in res.quarantine["raw"][0]


def test_identifiers_that_can_carry_a_person_are_pseudonymised_or_scrubbed(tmp_path):
    records = [
        msg(
            "x-pii-rawuser-77:session-1",
            "user",
            "hi",
            user_id="rawuser-77",
            message_id="msg-415-555-0132",
            character_id="alice.smith@example.com",
            surface="tel:+1 415-555-0132",
        ),
        msg(
            "x-pii-rawuser-77:session-1",
            "assistant",
            "hello",
            sec=1,
            user_id="rawuser-77",
            served_by="gen-bob@evil.test",
        ),
    ]
    write(tmp_path, "alice.smith@example.com.jsonl", records + [{"user_id": "rawuser-77", "role": "user"}])
    res = ingest(tmp_path)
    conv, q = res.conversations, res.quarantine
    cid = H.pseudonym("c", H("rawuser-77"), "x-pii-rawuser-77:session-1")
    assert conv["conversation_id"].to_list() == [cid, cid]
    assert conv["message_id"][0] == H.pseudonym("m", cid, "msg-415-555-0132")
    assert conv["character_id"][0] == "[EMAIL]" and conv["surface"][0] == "tel:[PHONE]"
    assert conv["served_by"][1] == "[EMAIL]"
    # the file's name is scrubbed wherever it is stored
    assert q["source_file"].to_list() == [f"day={DAY}/[EMAIL]"]
    stored = json.dumps(conv.drop("ts", "day").to_dicts() + q.drop("day").to_dicts())
    for raw in ("rawuser-77", "alice.smith", "555-0132", "bob@evil", "msg-415"):
        assert raw not in stored


@pytest.mark.parametrize(
    "line",
    [
        '{"user\\u005fid": "rawuser-esc", "text": "cut',
        '{"USER\\u005FID": "rawuser-esc", "text": "cut',
        '{"user_id": ["rawuser-list", "x"], "text": "cut',
        '{"user_id": {"id": "rawuser-obj", "name": "x"}, "text": "cut',
        '{"user_id": {"id": ["rawuser-deep"]',
        '{"conversation_id": "x-rawuser-conv", "text": "cut',
        '{"author" : [ "rawuser-spaced" ], "text": "cut',
        # found by the fuzzer: a bad byte in the key, a quote that pairs with the next line's, camelCase
        '{"\\xffconversation_id": "x-pii-rawuser-bad:s", "text": "cut',
        '{"conversation_id": "\r{"user_id": "rawuser-swallowed", "text": "cut',
        '{"userId": "rawuser-camel", "text": "cut',
    ],
)
def test_the_redactor_finds_every_json_spelling_of_an_id_key(line):
    out = Redactor(H).line(line)
    assert "rawuser" not in out
    assert ("cut" in out) == ("cut" in line)  # the rest of the line is kept


def test_an_escaped_id_hashes_as_accepted_rows_carry_it():
    out = Redactor(H).line('{"user\\u005fid": "rawuser-esc", "text": "cut')
    assert H("rawuser-esc") in out


def test_pii_behind_json_escapes_in_a_line_that_cannot_be_parsed_is_scrubbed():
    escaped = json.dumps("４１５-５５５-０１３２")[1:-1]  # as a writer with ASCII output spells it
    out = Redactor(H).line('{"text": "call ' + escaped + ' now", "x": "cut')
    assert "[PHONE]" in out and "\\uff14" not in out
