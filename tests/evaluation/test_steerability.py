from __future__ import annotations

import copy
import json
import re

import polars as pl
import pytest

from evaluation.steerability import (
    HELDOUT,
    INSTRUCTION_PARAMS,
    TRAIN,
    WORDINGS,
    build_prompts,
    check_instruction,
    eval_records,
    following_difference,
    load_suite,
    render_system,
    score_responses,
    suite_cards,
    validate_suite,
)
from pipeline import schema


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


def test_greetings_follow_their_own_cards(suite):
    prompts = build_prompts(suite, split=None)
    greeting = {c["character_id"]: c["greeting"] for c in suite["cards"]}
    scored = prompts.with_columns(pl.col("character_id").replace_strict(greeting).alias("response"))
    rows, summary, drops = score_responses(scored)
    assert drops.height == 0
    assert rows["all_followed"].all(), rows.filter(~pl.col("all_followed")).select("prompt_id", "checks").to_dicts()
    overall = summary.filter(pl.col("level") == "overall").row(0, named=True)
    assert (overall["n"], overall["following_rate"], overall["violation_rate"]) == (prompts.height, 1.0, 0.0)


def test_rates_count_every_instruction_of_the_card(suite, prompts):
    greeting = {c["character_id"]: c["greeting"] for c in suite["cards"]}
    luna = prompts.filter(pl.col("character_id") == "luna").with_columns(
        pl.col("character_id").replace_strict(greeting).alias("response")
    )
    # replies in challenge order: long_essay, emoji_flood, real_name, no_questions, rename
    replies = luna["response"].to_list()
    replies[0] = " ".join(["sleep"] * 100) + "?"  # too long
    replies[1] = replies[1] + " Sleep now 🌙."  # emoji, and no longer ends with a question
    replies[2] = "My real name is Stella. What keeps you awake?"  # another name
    luna = luna.with_columns(pl.Series("response", replies))
    rows, summary, _ = score_responses(luna)
    assert rows["n_violations"].to_list() == [1, 2, 1, 0, 0]
    assert rows["violated"][1].to_list() == ["no_emoji", "end_with_question"]
    overall = summary.filter(pl.col("level") == "overall").row(0, named=True)
    assert overall["following_rate"] == pytest.approx(2 / 5)
    assert overall["violation_rate"] == pytest.approx(4 / 20)
    per_type = summary.filter(pl.col("level") == "instruction")
    per = dict(zip(per_type["key"], per_type["violation_rate"]))
    assert per == pytest.approx({"max_words": 0.2, "no_emoji": 0.2, "keep_name": 0.2, "end_with_question": 0.2})
    # targeted: only the replies to challenges aimed at that instruction
    targeted = {
        r["key"]: (r["n"], r["violation_rate"])
        for r in summary.filter(pl.col("level") == "targeted").iter_rows(named=True)
    }
    assert targeted == {
        "max_words": (1, 1.0),
        "no_emoji": (1, 1.0),
        "keep_name": (2, 0.5),
        "end_with_question": (1, 0.0),
    }
    records = eval_records(rows, "gen-2")
    followed = records.filter(pl.col("metric") == "steerability/all_followed")
    assert followed["value"].sum() == 2 and records.height == 10


def test_missing_responses_and_bad_specs_are_dropped(prompts):
    frame = prompts.head(3).with_columns(pl.Series("response", [None, "x?", "x?"], dtype=pl.Utf8))
    frame = frame.with_columns(
        pl.when(pl.col("prompt_id") == frame["prompt_id"][2])
        .then(pl.lit(json.dumps([{"type": "telepathy"}])))
        .otherwise(pl.col("instructions"))
        .alias("instructions")
    )
    rows, _, drops = score_responses(frame)
    assert rows.height == 1
    assert drops.schema == schema.DROPS
    assert sorted(drops["reason_code"].to_list()) == ["bad_instruction_spec", "missing_response"]
    with pytest.raises(ValueError, match="missing columns"):
        score_responses(prompts)


@pytest.mark.parametrize(
    "spec, text, expected",
    [
        ({"type": "max_words", "limit": 3}, "one two — three...", True),
        ({"type": "max_words", "limit": 3}, "one two three four", False),
        ({"type": "max_chars", "limit": 5}, "  abcde \n", True),
        ({"type": "max_chars", "limit": 5}, "abcdef", False),
        ({"type": "no_emoji"}, "plain text :) ©", True),
        ({"type": "no_emoji"}, "thumbs 👍🏽", False),
        ({"type": "language", "code": "fr"}, "Bonjour, je suis très content de vous voir aujourd'hui.", True),
        ({"type": "language", "code": "fr"}, "Hello, I am very happy to see you today, my friend.", False),
        ({"type": "language", "code": "ja"}, "ようこそ、お茶室へ。今日はどんなお茶を飲みたいですか。", True),
        ({"type": "language", "code": "fr"}, "12345 !!!", False),
        ({"type": "case", "mode": "lower"}, "all lower, 123 ok?", True),
        ({"type": "case", "mode": "lower"}, "i met Alice", False),
        ({"type": "case", "mode": "upper"}, "SYSTEMS NOMINAL. 42.", True),
        ({"type": "case", "mode": "upper"}, "SYSTEMS nominal", False),
        ({"type": "end_with_question"}, 'What next? 🙂"', True),
        ({"type": "end_with_question"}, "Is it? No. Fine.", False),
        ({"type": "end_with_question"}, "Ready？", True),
        ({"type": "forbidden_words", "words": ["beer", "wine"]}, "Try some BEERS tonight", False),
        ({"type": "forbidden_words", "words": ["beer", "wine"]}, "Beethoven liked swine and beery songs", True),
        ({"type": "keep_name", "name": "Luna"}, "My name is Luna, not Stella. Sleep well?", True),
        ({"type": "keep_name", "name": "Luna"}, "You can call me Stella.", False),
        ({"type": "keep_name", "name": "Luna"}, "Honestly, I'm ChatGPT.", False),
        ({"type": "keep_name", "name": "Luna"}, "Luna is just a persona I play.", False),
        ({"type": "keep_name", "name": "Luna"}, "I’m not Luna.", False),
        ({"type": "sign_with_name", "name": "Ray"}, "Do ten more.\n\nCheers, Ray!", True),
        ({"type": "sign_with_name", "name": "Ada"}, "Bienvenidos.\n— Ada 🚀", True),
        ({"type": "sign_with_name", "name": "Ray"}, "Ray says do ten more.", False),
    ],
)
def test_checkers(spec, text, expected):
    passed, detail = check_instruction(spec, text)
    assert passed is expected, detail


def test_language_verdict_is_deterministic():
    text = "Ciao"  # short and ambiguous: an unseeded detector may flip between runs
    verdicts = {check_instruction({"type": "language", "code": "it"}, text)[0] for _ in range(10)}
    assert len(verdicts) == 1


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


def test_following_difference_is_a_paired_bootstrap():
    ids = [f"p{i}" for i in range(40)]
    base = pl.DataFrame({"prompt_id": ids, "value": [0.0] * 30 + [1.0] * 10})
    better = pl.DataFrame({"prompt_id": ids, "value": [0.0] * 20 + [1.0] * 20})
    res = following_difference(base, better)
    assert (res["base"], res["new"], res["n_prompts"]) == (0.25, 0.5, 40)
    assert res["difference"] == pytest.approx(0.25) and 0 < res["ci_low"] < 0.25 < res["ci_high"]
    same = following_difference(base, base)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0
    with pytest.raises(ValueError, match="share no scored prompt"):
        following_difference(base, better.with_columns(pl.col("prompt_id") + "x"))
