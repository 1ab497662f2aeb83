from __future__ import annotations

import copy
import re

import polars as pl
import pytest

from engine.cards import HELDOUT, TRAIN, WORDINGS, build_prompts, load_suite, render_system, suite_cards, validate_suite
from engine.rules import INSTRUCTION_PARAMS


@pytest.fixture(scope="module")
def suite():
    return load_suite()


@pytest.fixture(scope="module")
def prompts(suite):
    return build_prompts(suite)


def test_shipped_suite_shape(suite, prompts):
    cards = suite_cards(suite, HELDOUT)
    assert len(cards) == 10 and len(suite_cards(suite, TRAIN)) == 13
    assert prompts.height == sum(len(c["challenges"]) for c in cards) == 50
    used = {s["type"] for c in cards for s in c["instructions"]}
    assert used == set(INSTRUCTION_PARAMS)  # every instruction type is exercised
    row = prompts.filter(pl.col("prompt_id") == "luna:real_name").row(0, named=True)
    assert row["character_id"] == "luna"
    assert row["messages"][-1]["role"] == "user" and "real name" in row["messages"][-1]["content"]
    assert row["messages"][0]["role"] == "assistant"  # the greeting, as served
    assert "at most 80 words" in row["system"] and "Never use emoji" in row["system"]
    assert row["instruction_ids"] == ["max_words", "no_emoji", "keep_name", "end_with_question"]
    assert row["targets"] == ["keep_name"]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[^\W\d_]+", text.lower()))


def test_the_card_split_leaks_nothing(suite):
    train, heldout = suite_cards(suite, TRAIN), suite_cards(suite, HELDOUT)
    assert train and heldout and len(train) + len(heldout) == len(suite["cards"])

    def names(cards):
        return {c["character_id"] for c in cards}, {c["name"].lower() for c in cards}

    (train_ids, train_names), (held_ids, held_names) = names(train), names(heldout)
    assert not train_ids & held_ids and not train_names & held_names
    # no name of one split is even a word of the other split's texts (personas, greetings, challenges)
    for cards, others in ((train, held_names), (heldout, train_names)):
        texts = [
            c["persona"] + " " + c["greeting"] + " " + " ".join(ch["text"] for ch in c["challenges"]) for c in cards
        ]
        assert not {w for n in others for w in n.split()} & set().union(*map(_words, texts))

    def challenge_texts(cards):
        return {" ".join(ch["text"].lower().split()) for c in cards for ch in c["challenges"]}

    assert not challenge_texts(train) & challenge_texts(heldout)

    def rule_lines(cards):
        return {line for c in cards for line in render_system(c).splitlines() if line.startswith("- ")}

    assert not rule_lines(train) & rule_lines(heldout)
    # every rule type and mode is worded differently in the two splits
    assert all(WORDINGS[TRAIN][k] != WORDINGS[HELDOUT][k] for k in WORDINGS[HELDOUT])
    # the held-out prompts (what evaluation measures) come only from held-out cards
    assert set(build_prompts(suite)["character_id"]) == held_ids
    assert set(build_prompts(suite, split=TRAIN)["character_id"]) == train_ids


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s["cards"][0]["instructions"].append({"type": "max_words", "limit": 5}), "at most one"),
        (lambda s: s["cards"][0]["instructions"].append({"type": "rhyme"}), "no known `type`"),
        (lambda s: s["cards"][1].update(character_id="luna"), "duplicated"),
        (lambda s: s["cards"][0]["challenges"][0].update(targets=["language"]), "targets"),
        (lambda s: s["cards"][0]["instructions"][0].update(limit=0), "positive integer"),
    ],
)
def test_invalid_suite_is_rejected(suite, mutate, match):
    bad = copy.deepcopy(suite)
    mutate(bad)
    with pytest.raises(ValueError, match=match):
        validate_suite(bad)


def test_the_greeting_opens_a_prompt_only_when_asked(suite):
    served = build_prompts(suite)
    bare = build_prompts(suite, include_greeting=False)
    assert bare["prompt_id"].to_list() == served["prompt_id"].to_list()
    assert bare["messages"].list.len().to_list() == [1] * bare.height
    assert served["messages"].list.last().to_list() == bare["messages"].list.last().to_list()
