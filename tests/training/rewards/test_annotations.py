from __future__ import annotations

import datetime as dt
import gzip
import json

import polars as pl
import pytest

from pipeline import schema
from training.rewards.annotation_set import PAIRS
from training.rewards.annotations import read_annotations, resolve_prompts

PROMPT = [{"role": "user", "content": "Tell me about cats"}]
GOOD = [
    {
        "kind": "pointwise",
        "id": "pt1",
        "prompt": PROMPT,
        "response": "Cats are great.",
        "rating": 4,
        "questions": {"false_refusal": False, "templated": True, "funny": 3},
        "annotator": "ann1",
    },
    {
        "kind": "pointwise",
        "prompt_id": "p42",
        "response": "I can't help with that.",
        "rating": 1,
        "questions": {"false_refusal": True, "templated": False},
        "day": "2024-05-02",
    },
    {
        "kind": "pairwise",
        "id": "pw1",
        "prompt": "hi!",
        "response_a": "Hey there!",
        "response_b": "Hello.",
        "preferred": "a",
        "strength": 3,
    },
    {
        "kind": "pairwise",
        "id": "pw2",
        "prompt": PROMPT,
        "response_a": "Meow.",
        "response_b": "Cats purr.",
        "preferred": "b",
    },
    {"kind": "pairwise", "id": "pw3", "prompt": PROMPT, "response_a": "A", "response_b": "B", "preferred": "tie"},
    {"kind": "rewrite", "prompt": PROMPT, "original": "Cats.", "rewrite": "Cats are small, curious animals."},
    {
        "kind": "steerability",
        "prompt": PROMPT,
        "response": "Arr, cats be fine",
        "character_id": "pirate",
        "violated_instructions": ["no_slang"],
    },
    {
        "kind": "steerability",
        "prompt_id": "p7",
        "response": "Ahoy",
        "character_id": "pirate",
        "violated_instructions": [],
    },
]

BAD = {
    "invalid_json": '{"kind": "pairwise", ',
    "not_object": '["pairwise"]',
    "unknown_kind": {"kind": "ranking", "prompt": "x"},
    "missing_field": {"kind": "pairwise", "prompt": "x", "response_a": "a", "preferred": "a"},
    "wrong_type": {
        "kind": "pointwise",
        "prompt": "x",
        "response": "r",
        "rating": "5",
        "questions": {"false_refusal": False, "templated": False},
    },
    "bad_value": {"kind": "pairwise", "prompt": "x", "response_a": "a", "response_b": "b", "preferred": "c"},
    "empty_text": {"kind": "rewrite", "prompt": "x", "original": "  ", "rewrite": "better"},
    "duplicate_id": {
        "kind": "pairwise",
        "id": "pw1",
        "prompt": "x",
        "response_a": "a",
        "response_b": "b",
        "preferred": "a",
    },
}
MORE_BAD = [
    (
        "missing_field",
        {"kind": "pointwise", "prompt": "x", "response": "r", "rating": 3, "questions": {"templated": False}},
    ),
    (
        "wrong_type",
        {
            "kind": "pointwise",
            "prompt": "x",
            "response": "r",
            "rating": True,
            "questions": {"false_refusal": False, "templated": False},
        },
    ),
    (
        "bad_value",
        {
            "kind": "pointwise",
            "prompt": "x",
            "response": "r",
            "rating": 6,
            "questions": {"false_refusal": False, "templated": False},
        },
    ),
    ("missing_field", {"kind": "rewrite", "original": "a", "rewrite": "b"}),
    (
        "bad_value",
        {
            "kind": "rewrite",
            "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "original": "a",
            "rewrite": "b",
        },
    ),
    ("bad_value", {"kind": "rewrite", "prompt": [{"role": "robot", "content": "q"}], "original": "a", "rewrite": "b"}),
    (
        "wrong_type",
        {"kind": "steerability", "prompt": "x", "response": "r", "character_id": "c", "violated_instructions": [1, 2]},
    ),
    (
        "bad_value",
        {"kind": "pairwise", "prompt": "x", "response_a": "a", "response_b": "b", "preferred": "a", "strength": 7},
    ),
    ("missing_field", {"prompt": "x"}),
]


def _line(obj) -> str:
    return obj if isinstance(obj, str) else json.dumps(obj)


def test_good_annotations_land_in_their_frames():
    out = read_annotations([_line(o) + "\n" for o in GOOD] + ["\n"], day=dt.date(2024, 5, 1))
    counts = out.counts()
    assert counts == {
        "records_read": 8,
        "pointwise": 2,
        "pairwise": 3,
        "rewrites": 1,
        "steerability": 2,
        "pairs": 2,
        "quarantined": 0,
        "quarantine_reasons": {},
        "ties": 1,
    }
    pt = out.pointwise.sort("line")
    assert pt["false_refusal"].to_list() == [False, True]
    assert pt["templated"].to_list() == [True, False]
    assert pt["rating"].to_list() == [4, 1]
    assert json.loads(pt["answers"][0]) == {"false_refusal": False, "funny": 3, "templated": True}
    assert pt["prompt"][1] is None and pt["prompt_id"][1] == "p42"
    assert pt["day"].to_list() == [dt.date(2024, 5, 1), dt.date(2024, 5, 2)]
    pairs = out.pairs.sort("pair_id")
    assert pairs.schema == PAIRS
    assert pairs.select("chosen", "rejected", "margin").rows() == [
        ("Hey there!", "Hello.", 1.0),
        ("Cats purr.", "Meow.", 0.0),
    ]
    # a plain-string prompt becomes one user message
    assert pairs["prompt"][0].to_list() == [{"role": "user", "content": "hi!"}]
    assert out.drops.select("row_id", "reason_code").rows() == [("pw3", "tie")]
    assert out.steerability["violated_instructions"].to_list() == [["no_slang"], []]


def test_every_bad_row_is_quarantined_with_its_reason(tmp_path):
    lines = [_line(GOOD[2])] + [_line(v) for v in BAD.values()] + [_line(o) for _, o in MORE_BAD]
    path = tmp_path / "ann.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    out = read_annotations(path, day=dt.date(2024, 5, 1))
    q = out.quarantine
    assert q.schema == schema.QUARANTINE
    expected = list(BAD) + [code for code, _ in MORE_BAD]
    assert q.sort("line")["reason_code"].to_list() == expected
    assert q["line"].to_list() == list(range(2, len(lines) + 1))
    assert set(q["source_file"]) == {"ann.jsonl.gz"}
    assert q.filter(pl.col("reason_code") == "invalid_json")["raw"][0] == BAD["invalid_json"]
    assert out.records_read == len(lines) == out.pairwise.height + q.height


def test_resolve_prompts_fills_from_the_prompts_table():
    lines = [
        json.dumps(o)
        for o in [
            {"kind": "pairwise", "id": "k1", "prompt_id": "p1", "response_a": "a", "response_b": "b", "preferred": "a"},
            {
                "kind": "pairwise",
                "id": "k2",
                "prompt_id": "nope",
                "response_a": "a",
                "response_b": "b",
                "preferred": "b",
            },
            {
                "kind": "pairwise",
                "id": "k3",
                "prompt": "inline",
                "response_a": "a",
                "response_b": "b",
                "preferred": "b",
            },
        ]
    ]
    out = read_annotations(lines)
    prompts = pl.DataFrame(
        {
            "prompt_id": ["p1"],
            "system": ["be a pirate"],
            "history": [[{"role": "user", "content": "ahoy?"}]],
        }
    )
    pairs, drops = resolve_prompts(out.pairs, prompts)
    assert pairs.schema == PAIRS
    got = {r["pair_id"]: r["prompt"] for r in pairs.to_dicts()}
    assert got == {
        "annotation:k1": [{"role": "system", "content": "be a pirate"}, {"role": "user", "content": "ahoy?"}],
        "annotation:k3": [{"role": "user", "content": "inline"}],
    }
    assert drops.schema == schema.DROPS
    assert drops.select("row_id", "reason_code").rows() == [("annotation:k2", "unknown_prompt_id")]
    points, _ = resolve_prompts(read_annotations([json.dumps(GOOD[1])]).pointwise, prompts)
    assert points.height == 0


def test_read_annotation_source_detects_each_format(tmp_path):
    from training.rewards.annotations import read_annotation_source

    (tmp_path / "a.jsonl").write_text(
        json.dumps(
            {"kind": "pairwise", "prompt": "hi!", "response_a": "Hey there!", "response_b": "Hello.", "preferred": "a"}
        )
        + "\n"
    )
    (tmp_path / "hh.jsonl").write_text(
        json.dumps(
            {
                "chosen": "\n\nHuman: hi\n\nAssistant: hello, how can I help?",
                "rejected": "\n\nHuman: hi\n\nAssistant: go away",
            }
        )
        + "\n"
    )
    got = read_annotation_source(tmp_path)
    assert got.pairs.height == 2
    assert sorted(got.pairs["chosen"].to_list()) == ["Hey there!", "hello, how can I help?"]
    with pytest.raises(ValueError, match="annotations_path"):
        read_annotation_source(tmp_path / "missing.jsonl")
