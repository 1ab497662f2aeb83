from __future__ import annotations

import json

import pytest

from training.rewards.annotation_set import PAIRS
from training.rewards.hh_rlhf import parse_hh_transcript, read_hh_rlhf, split_hh_pair


def test_parse_hh_transcript():
    text = "\n\nHuman: hi\n\nAssistant: hello!\n\nHuman: how are you?\n\nAssistant: fine"
    assert parse_hh_transcript(text) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "fine"},
    ]
    with pytest.raises(ValueError):
        parse_hh_transcript("no turns here")


def test_hh_reason_codes():
    base = "\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant: "
    prompt, chosen, rejected = split_hh_pair(base + "good", base + "bad")
    assert [m["content"] for m in prompt] == ["q1", "a1", "q2"] and (chosen, rejected) == ("good", "bad")
    rows = {
        "prefix_mismatch": {"chosen": base + "x", "rejected": base.replace("q1", "other") + "y"},
        "identical_responses": {"chosen": base + "same", "rejected": base + "same"},
        "empty_text": {"chosen": base, "rejected": base + "y"},
        "unparseable_transcript": {"chosen": "Human: hi", "rejected": "Human: ho"},
        "wrong_type": {"chosen": ["x"], "rejected": "y"},
        "missing_field": {"chosen": base + "x"},
        "duplicate_id": {"chosen": base + "good", "rejected": base + "bad"},
    }
    lines = [json.dumps({"chosen": base + "good", "rejected": base + "bad"})] + [json.dumps(r) for r in rows.values()]
    out = read_hh_rlhf(lines + ["not json"])
    assert out.pairs.height == 1
    assert out.quarantine["reason_code"].to_list() == list(rows) + ["invalid_json"]


def test_hh_rlhf_real_file(shared_data):
    out = read_hh_rlhf(shared_data / "hh_rlhf_harmless_base_test_0-1999.jsonl.gz")
    assert out.records_read == 2000
    assert out.pairs.height + out.quarantine.height == 2000
    # four records have an empty chosen response, four have a malformed transcript (inline "Human:")
    assert out.counts()["quarantine_reasons"] == {"empty_text": 4, "unparseable_transcript": 4}
    pairs = out.pairs
    assert pairs.schema == PAIRS and pairs["pair_id"].n_unique() == pairs.height
    last_roles = pairs["prompt"].list.last().struct.field("role")
    assert (last_roles == "user").all()
    assert (pairs["chosen"] != pairs["rejected"]).all()
    first = pairs.row(0, named=True)
    assert first["prompt"][0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
    assert first["chosen"].startswith("No, sorry!")
