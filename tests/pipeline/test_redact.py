import json

import polars as pl
import pytest

from pipeline.redact import RAW_LIMIT, Redactor
from pipeline.schema import QUARANTINE, UserHasher

HASH = UserHasher("salt-for-tests")
R = Redactor(HASH, max_text_chars=100)


def test_parsed_record_ids_are_the_accepted_hash_and_text_is_scrubbed():
    raw = R.value(
        {
            "conversation_id": "c1",
            "user_id": "rawuser-8",
            "messages": [{"role": "user", "content": "mail jane@example.com or call +1 415 555 0199", "uid": 42}],
            "author": {"id": "rawuser-9", "name": "Jane"},
        }
    )
    assert "rawuser" not in raw and "jane@example.com" not in raw and "555 0199" not in raw
    value = json.loads(raw)
    assert value["user_id"] == HASH("rawuser-8")  # the hash accepted rows carry for this user
    assert value["messages"][0]["uid"] == HASH("42")
    assert value["messages"][0]["content"] == "mail [EMAIL] or call [PHONE]"
    # a conversation id can carry a person too: it is pseudonymised, with a kind of its own
    assert value["conversation_id"] == HASH.pseudonym("id", "c1")


@pytest.mark.parametrize(
    "line",
    [
        '{"conversation_id": "q1", "user_id": "rawuser-8", "text": "unterminated',
        "{user_id: 'rawuser-8', text: 'single quotes'}",
        "user_id=rawuser-8 text=plain",
        '{"text": "cut off", "user_id": "rawuser-8',
        '{"USER": "rawuser-8"}',
        '{"sender" :  "rawuser-8", "x": 1}',
    ],
)
def test_unparseable_lines_lose_their_user_ids(line):
    out = R.line(line)
    assert "rawuser-8" not in out
    assert HASH("rawuser-8") in out


def test_unparseable_lines_are_scrubbed_and_cut():
    out = R.line('{"text": "write to jane@example.com ' + "x" * (3 * RAW_LIMIT))
    assert "jane@example.com" not in out and "[EMAIL]" in out
    assert len(out) < RAW_LIMIT + 40 and out.endswith("more chars]")


def test_long_strings_are_cut_like_accepted_text_and_surrogates_escaped():
    value = json.loads(R.value({"text": "y" * 500, "other": "a\ud800b"}))
    assert value["text"].startswith("y" * 100) and "more chars" in value["text"]
    assert value["other"] == "a\\ud800b"
    # what the quarantine table holds must be writable
    pl.DataFrame({"raw": [R.value({"t": "\udfff"}), R.line("\ud800 raw")]}).write_ndjson()
    assert set(QUARANTINE) >= {"raw"}


def test_words_that_only_contain_a_key_are_kept():
    assert R.line('{"superuser_idea": "kept"}') == '{"superuser_idea": "kept"}'
