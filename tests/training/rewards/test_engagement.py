from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from pipeline import schema
from training.rewards.engagement import (
    SERVED_TURN_LABELS,
    EngagementConfig,
    check_labels,
    served_turn_labels,
    user_day_drops,
    user_day_engagement,
    with_labels,
)

D1, D2 = dt.date(2024, 3, 1), dt.date(2024, 3, 2)


def _conversations(rows: list[tuple]) -> pl.DataFrame:
    """rows: (conversation_id, turn_index, role, text, feedback, user_hash, day)."""
    df = pl.DataFrame(
        rows, schema=["conversation_id", "turn_index", "role", "text", "feedback", "user_hash", "day"], orient="row"
    )
    return df.with_columns(
        pl.format("{}-{}", "conversation_id", "turn_index").alias("message_id"),
        pl.col("turn_index").cast(pl.Int32),
        pl.col("day").cast(pl.Date),
        pl.col("day").cast(pl.Datetime("us", "UTC")).alias("ts"),
        pl.lit("char1").alias("character_id"),
        pl.lit("internal").alias("source"),
        pl.lit("gen0").alias("served_by"),
        pl.lit("app").alias("surface"),
    ).pipe(schema.conform, schema.CONVERSATIONS)


@pytest.fixture()
def convs() -> pl.DataFrame:
    return _conversations(
        [
            # c1: three served turns; the first assistant turn spans two messages, one thumbed up
            ("c1", 0, "system", "be nice", None, "u1", D1),
            ("c1", 1, "user", "hi there", None, "u1", D1),
            ("c1", 2, "assistant", "hello", None, "u1", D1),
            ("c1", 3, "assistant", "how are you?", "up", "u1", D1),
            ("c1", 4, "user", "good", None, "u1", D1),
            ("c1", 5, "user", "and you?", None, "u1", D1),
            ("c1", 6, "assistant", "great", "love", "u1", D1),
            ("c1", 7, "assistant", "thanks", "down", "u1", D1),
            ("c1", 8, "user", "bye now", None, "u1", D2),
            ("c1", 9, "assistant", "see you", "regenerate", "u1", D2),
            # c2: opens with a greeting (no served response) and the user's message is never answered
            ("c2", 0, "assistant", "welcome!", None, "u2", D1),
            ("c2", 1, "user", "anyone?", None, "u2", D1),
            # c3: a message without a user hash cannot be attributed
            ("c3", 0, "user", "hello?", None, None, D1),
            ("c3", 1, "assistant", "hi", None, None, D1),
        ]
    )


def test_served_turn_labels_follow_the_definitions(convs):
    labels = served_turn_labels(convs).sort("conversation_id", "cut_turn")
    assert labels.schema == SERVED_TURN_LABELS
    c1 = labels.filter(pl.col("conversation_id") == "c1")
    assert c1["cut_turn"].to_list() == [1, 5, 8]
    assert c1["response_turn"].to_list() == [3, 7, 9]
    assert c1["continued"].to_list() == [True, True, False]
    # next user turn of the first response is "good\nand you?" (two merged messages)
    assert c1["reply_len"].to_list() == [len("good\nand you?"), len("bye now"), None]
    assert c1["depth_after"].to_list() == [2, 1, 0]
    # a negative mark taints the turn: love and down give -1; regenerate counts -1 by default
    assert c1["thumbs"].to_list() == [1, -1, -1]
    assert c1["regenerated"].to_list() == [False, False, True]
    assert c1["loved"].to_list() == [False, True, False]
    assert c1["day"].to_list() == [D1, D1, D2]
    # c2's opening assistant turn answers nobody; c3's single exchange was not continued
    assert labels.filter(pl.col("conversation_id") == "c2").height == 0
    c3 = labels.filter(pl.col("conversation_id") == "c3").row(0, named=True)
    assert (c3["cut_turn"], c3["continued"], c3["depth_after"], c3["thumbs"], c3["reply_len"]) == (
        0,
        False,
        0,
        None,
        None,
    )


def test_reply_len_in_words(convs):
    cfg = EngagementConfig(reply_len_unit="words", regenerate_is_negative=False)
    labels = served_turn_labels(convs, cfg).sort("conversation_id", "cut_turn")
    c1 = labels.filter(pl.col("conversation_id") == "c1")
    assert c1["reply_len"].to_list() == [3, 2, None]
    assert c1["thumbs"].to_list() == [1, -1, None]


def test_bad_config_names_the_setting():
    with pytest.raises(ValueError, match="reply_len_unit"):
        EngagementConfig(reply_len_unit="tokens")


def test_with_labels_and_check_labels(convs):
    prompts = pl.DataFrame(
        {
            "prompt_id": ["p1", "p2", "p3", "p_missing"],
            "conversation_id": ["c1", "c1", "c1", "c9"],
            "cut_turn": pl.Series([1, 5, 8, 0], dtype=pl.Int32),
            "day": [D1, D1, D2, D1],
            "continued": [None, None, None, None],
        }
    )
    labelled = with_labels(prompts, convs)
    assert labelled.sort("prompt_id")["depth_after"].to_list() == [2, 1, 0, None]
    kept, drops = check_labels(labelled)
    assert sorted(kept["prompt_id"].to_list()) == ["p1", "p2", "p3"]
    assert drops.schema == schema.DROPS
    assert drops.select("row_id", "reason_code").rows() == [("p_missing", "missing_label")]


def test_check_labels_reason_codes():
    prompts = pl.DataFrame(
        {
            "prompt_id": [
                "ok",
                "ok_end",
                "neg",
                "thumb",
                "cont_no_depth",
                "reply_without_cont",
                "cont_no_reply",
                "null",
                "unanswered",
            ],
            "served_response": ["r"] * 8 + [None],
            "continued": [True, False, True, True, True, False, True, None, None],
            "reply_len": pl.Series([5, None, -1, 5, 5, 3, None, 0, None], dtype=pl.Int32),
            "depth_after": pl.Series([1, 0, 1, 1, 0, 0, 2, 0, None], dtype=pl.Int32),
            "thumbs": pl.Series([1, -1, None, 2, None, None, None, None, None], dtype=pl.Int8),
        }
    )
    kept, drops = check_labels(prompts)
    assert kept["prompt_id"].to_list() == ["ok", "ok_end"]
    assert dict(drops.select("row_id", "reason_code").rows()) == {
        "neg": "bad_value",
        "thumb": "bad_value",
        "cont_no_depth": "inconsistent_label",
        "reply_without_cont": "inconsistent_label",
        "cont_no_reply": "inconsistent_label",
        "null": "missing_label",
        "unanswered": "unanswered",
    }
    assert drops["day"].null_count() == drops.height  # no day column: nulls, not a crash
    with pytest.raises(ValueError, match="with_labels"):
        check_labels(prompts.drop("depth_after"))


def test_user_day_engagement(convs):
    out = user_day_engagement(convs).sort("user_hash", "day")
    rows = {(r["user_hash"], r["day"]): r for r in out.to_dicts()}
    assert set(rows) == {("u1", D1), ("u1", D2), ("u2", D1)}
    assert rows[("u1", D1)]["messages_sent"] == 3 and rows[("u1", D1)]["engaged"] is True
    assert rows[("u1", D2)]["messages_sent"] == 1 and rows[("u1", D2)]["replied_messages"] == 1
    # u2 wrote once and got no reply: present (depth 1) but not engaged (breadth)
    assert rows[("u2", D1)]["messages_sent"] == 1 and rows[("u2", D1)]["engaged"] is False
    assert all(r["conversations"] == 1 for r in rows.values())
    drops = user_day_drops(convs)
    assert drops.select("row_id", "reason_code").rows() == [("c3-0", "missing_user_hash")]


def test_labels_agree_with_the_prompts_table(convs):
    from pipeline.prompts import cut_prompts

    prompts, _ = cut_prompts(convs).frames
    kept, drops = check_labels(prompts)
    # c1's three cuts and c3's are answered; c2's user turn ends its conversation
    assert drops.select("reason_code").to_series().to_list() == ["unanswered"]
    relabelled = with_labels(kept, convs).sort("prompt_id")
    for col in ("continued", "reply_len", "depth_after", "thumbs"):
        assert relabelled[col].to_list() == kept.sort("prompt_id")[col].to_list(), col
