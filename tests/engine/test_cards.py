from __future__ import annotations

import copy
import itertools
import re

import polars as pl
import pytest

from engine.cards import (
    HELDOUT,
    SPLITS,
    TEST,
    TRAIN,
    WORDINGS,
    build_prompts,
    load_suite,
    render_system,
    suite_cards,
    validate_suite,
)
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


@pytest.mark.parametrize(("one", "other"), list(itertools.combinations(SPLITS, 2)))
def test_the_card_splits_leak_nothing(suite, one, other):
    first, second = suite_cards(suite, one), suite_cards(suite, other)
    assert first and second and sum(len(suite_cards(suite, s)) for s in SPLITS) == len(suite["cards"])

    def names(cards):
        return {c["character_id"] for c in cards}, {c["name"].lower() for c in cards}

    (first_ids, first_names), (second_ids, second_names) = names(first), names(second)
    assert not first_ids & second_ids and not first_names & second_names
    # no name of one split is even a word of the other split's texts (personas, greetings, challenges)
    for cards, others in ((first, second_names), (second, first_names)):
        texts = [
            c["persona"] + " " + c["greeting"] + " " + " ".join(ch["text"] for ch in c["challenges"]) for c in cards
        ]
        assert not {w for n in others for w in n.split()} & set().union(*map(_words, texts))

    def challenge_texts(cards):
        return {" ".join(ch["text"].lower().split()) for c in cards for ch in c["challenges"]}

    assert not challenge_texts(first) & challenge_texts(second)

    def rule_lines(cards):
        return {line for c in cards for line in render_system(c).splitlines() if line.startswith("- ")}

    assert not rule_lines(first) & rule_lines(second)
    # every rule type and mode is worded differently in the two splits
    assert all(WORDINGS[one][k] != WORDINGS[other][k] for k in WORDINGS[HELDOUT])


def test_each_prompt_set_comes_from_its_own_cards(suite):
    ids = {s: {c["character_id"] for c in suite_cards(suite, s)} for s in SPLITS}
    # the held-out prompts (what the gates measure) come only from held-out cards; the test prompts from test cards
    assert set(build_prompts(suite)["character_id"]) == ids[HELDOUT]
    assert set(build_prompts(suite, split=TRAIN)["character_id"]) == ids[TRAIN]
    assert set(build_prompts(suite, split=TEST)["character_id"]) == ids[TEST]
    # every rule type the gates read is measured on the test cards too
    types = {s: {i["type"] for c in suite_cards(suite, s) for i in c["instructions"]} for s in SPLITS}
    assert types[TEST] == types[HELDOUT]


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
