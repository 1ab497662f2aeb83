from __future__ import annotations

import json

import polars as pl
import pytest

from engine.cards import build_prompts, load_suite
from evaluation.steerability import eval_records, following_difference, score_responses
from pipeline import schema


@pytest.fixture(scope="module")
def suite():
    return load_suite()


@pytest.fixture(scope="module")
def prompts(suite):
    return build_prompts(suite)


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
