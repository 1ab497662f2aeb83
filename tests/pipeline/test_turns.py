import datetime as dt

import polars as pl

from pipeline.turns import INVALID_MESSAGE, label_user_turns, merge_turns, prepare, prompt_id, split_messages

DAY = dt.date(2024, 5, 1)


def _messages() -> pl.DataFrame:
    rows = [("user", "hi", None), ("user", "there", None), ("assistant", "hello", "regenerate"), ("user", "bye", None)]
    frame = pl.DataFrame(
        {
            "conversation_id": ["c1"] * 5,
            "turn_index": [0, 1, 2, 3, 4],
            "role": [r for r, _, _ in rows] + ["robot"],
            "text": [t for _, t, _ in rows] + ["?"],
            "feedback": [f for _, _, f in rows] + [None],
            "day": [DAY] * 5,
        }
    )
    return prepare(frame)


def test_runs_of_one_role_are_one_turn_and_a_bad_message_a_drop():
    messages, drops = split_messages(_messages())
    assert drops["reason_code"].to_list() == [INVALID_MESSAGE] and drops["row_id"].to_list() == ["c1:4"]
    turns = merge_turns(messages)
    assert turns["role"].to_list() == ["user", "assistant", "user"]
    assert turns["content"].to_list() == ["hi\nthere", "hello", "bye"]
    assert turns["t"].to_list() == [0, 1, 2]


def test_each_user_turn_carries_the_labels_of_the_reply_it_was_served():
    messages, _ = split_messages(_messages())
    first, last = label_user_turns(merge_turns(messages)).iter_rows(named=True)
    assert first["prompt_id"] == prompt_id("c1", 1) and first["served_response"] == "hello"
    assert (first["continued"], first["reply_len"], first["depth_after"], first["thumbs"]) == (True, 3, 1, -1)
    # the conversation's last user turn was served nothing: no labels
    assert last["served_response"] is None and last["continued"] is None and last["depth_after"] is None
    # asking for another answer counts against the reply only when configured so
    lenient = label_user_turns(merge_turns(messages, regenerate_is_negative=False))
    assert lenient["thumbs"].to_list() == [None, None]
