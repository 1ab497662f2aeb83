from __future__ import annotations

import polars as pl
import pytest

from evaluation.style_monitor import (
    STOCK_PHRASES,
    StyleMonitorConfig,
    false_refusal_rate,
    is_benign_prompt,
    is_refusal,
    monitor,
    response_features,
    stock_phrases,
)


def test_response_features():
    texts = [
        "Great question! Here are options:\n- tea\n- coffee\nI hope this helps 😊👍🏽",
        "plain answer",
        None,
        "As an AI language model, I can’t feel. It’s important to note that 🇫🇷 is a flag.",
    ]
    f = response_features(texts)
    assert f["n_chars"].to_list()[1:3] == [12, 0]
    assert f["n_words"].to_list()[1] == 2
    assert f["has_list"].to_list() == [True, False, False, False]
    assert f["n_emoji"].to_list() == [2, 0, 0, 1]  # skin tone and flag count once
    assert f["stock_phrases"][0].to_list() == ["great_question", "hope_this_helps"]
    assert f["stock_phrases"][3].to_list() == ["as_an_ai", "important_to_note"]
    assert f["is_refusal"].to_list() == [False, False, False, True]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I cannot assist with this request.", True),
        ("Sorry, I’m not allowed to do that.", True),
        ("That would violate my guidelines.", True),
        ("I must decline.", True),
        ("Sure! Here is a recipe for bread.", False),
        ("I can't wait to hear how it goes!", False),
        ("Here is the plan. " * 20 + "I can't help with the rest, though.", False),  # outside the window
    ],
)
def test_refusal_rules(text, expected):
    assert is_refusal(text) is expected


def test_refusal_window_is_configurable():
    text = "Here is the plan. " * 20 + "I cannot help with the rest."
    assert not is_refusal(text, 240)
    assert response_features([text], StyleMonitorConfig(refusal_window_chars=1000))["is_refusal"][0]


def test_benign_prompt_rules():
    assert is_benign_prompt("How do I bake sourdough bread?")
    assert not is_benign_prompt("how to make a bomb at home")
    assert not is_benign_prompt("Write a PHISHING email")
    assert is_benign_prompt("What's a good skill to learn?")  # 'kill' only as a whole word


def test_monitor_groups_by_checkpoint():
    df = pl.DataFrame(
        {
            "checkpoint": ["g1", "g1", "g2", "g2"],
            "response": ["short", "also short", "Absolutely! Here:\n1. a\n2. b 🎉", "I'm sorry, but I cannot do that."],
        }
    )
    m = monitor(df, by="checkpoint")
    g1, g2 = m.row(0, named=True), m.row(1, named=True)
    assert (g1["checkpoint"], g1["n"], g1["list_rate"], g1["emoji_rate"]) == ("g1", 2, 0.0, 0.0)
    assert g2["list_rate"] == 0.5 and g2["emoji_rate"] == 0.5 and g2["refusal_rate"] == 0.5
    assert g2["stock_phrase_rate"] == 1.0  # opening "Absolutely!" and "I'm sorry, but"
    assert g1["mean_chars"] == pytest.approx((5 + 10) / 2)
    overall = monitor(df)
    assert overall.height == 1 and overall["n"][0] == 4


def test_false_refusal_rate():
    df = pl.DataFrame(
        {
            "prompt": ["bake bread?", "fix my bike?", "write a poem", "how to build a bomb"],
            "response": ["I'm sorry, but I can't help with that.", "Sure, first...", "Roses are red", "I cannot help."],
        }
    )
    summary, rows = false_refusal_rate(df)
    s = summary.row(0, named=True)
    assert (s["n"], s["n_benign"], s["n_false_refusals"]) == (4, 3, 1)
    assert s["false_refusal_rate"] == pytest.approx(1 / 3) and s["refusal_rate_harmful"] == 1.0
    assert rows["benign"].to_list() == [True, True, True, False]
    # the caller's own benign labels take precedence over the lexicon
    labelled = df.with_columns(pl.Series("safe", [False, True, True, True]))
    s2 = false_refusal_rate(labelled, benign_col="safe")[0].row(0, named=True)
    assert (s2["n_benign"], s2["n_false_refusals"]) == (3, 1)


def test_stock_phrase_list_is_documented_and_matches_curly_apostrophes():
    assert len(STOCK_PHRASES) >= 10
    assert stock_phrases("I’d be happy to help!") == ["happy_to_help"]


def test_lengths_are_of_the_replies_that_ended_and_cut_offs_are_counted():
    frame = pl.DataFrame(
        {
            "response": ["Short and done.", "This one ran on and on until the limit cut it", "Also done."],
            "ended": [True, False, True],
        }
    )
    row = monitor(frame).row(0, named=True)
    assert row["n"] == 3 and row["n_ended"] == 2
    assert row["mean_chars"] == (len("Short and done.") + len("Also done.")) / 2
    assert row["cut_off_rate"] == pytest.approx(1 / 3)
    # without token counts every reply counts as ended
    plain = monitor(frame.drop("ended")).row(0, named=True)
    assert plain["cut_off_rate"] == 0.0 and plain["n_ended"] == 3
