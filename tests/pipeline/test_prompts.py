from __future__ import annotations

import datetime as dt
import gzip
import json
import random
import time
from pathlib import Path

import polars as pl
import pytest

from pipeline import schema
from pipeline.prompts import (
    NO_ASSISTANT_TURN,
    NO_RESPONSE,
    PROMPT_TOO_LONG,
    TURN_DROP_REASONS,
    PromptConfig,
    cut_prompts,
    summarize,
)
from pipeline.turns import DUPLICATE_TURN_INDEX, INVALID_MESSAGE, MESSAGE_DROP_REASONS, prompt_id

DAY = dt.date(2024, 5, 1)


def conversations(rows: list[tuple]) -> pl.DataFrame:
    """rows: (conversation_id, turn_index, role, text[, feedback[, served_by]])."""
    records = []
    for r in rows:
        conv, idx, role, text = r[:4]
        records.append(
            {
                "message_id": f"{conv}:{idx}",
                "conversation_id": conv,
                "turn_index": idx,
                "role": role,
                "text": text,
                "ts": dt.datetime(2024, 5, 1, 12, 0, idx % 60, tzinfo=dt.UTC),
                "user_hash": f"u_{conv}",
                "character_id": "bob",
                "source": "internal",
                "served_by": (r[5] if len(r) > 5 else "gen-1") if role == "assistant" else None,
                "surface": "web",
                "feedback": r[4] if len(r) > 4 else None,
                "day": DAY,
            }
        )
    return pl.DataFrame(records, schema=schema.CONVERSATIONS)


HAND = [
    ("c1", 0, "system", "You are Bob."),
    ("c1", 1, "user", "hi"),
    ("c1", 2, "user", "there"),
    ("c1", 3, "assistant", "hello"),
    ("c1", 4, "assistant", "how are you?", "up", "gen-7"),
    ("c1", 5, "user", "good thanks"),
    ("c1", 6, "assistant", "great", "down"),
    ("c1", 7, "user", "bye"),
]


def by_cut(prompts: pl.DataFrame) -> dict[int, dict]:
    return {row["cut_turn"]: row for row in prompts.iter_rows(named=True)}


def test_merges_turns_and_labels_match_hand_computed_values():
    prompts, drops = cut_prompts(conversations(HAND)).frames
    assert prompts.schema == schema.PROMPTS
    assert drops.height == 0
    p = by_cut(prompts)
    assert sorted(p) == [2, 5, 7]

    first = p[2]
    assert first["history"] == [{"role": "user", "content": "hi\nthere"}]
    assert first["text"] == "user: hi\nthere"
    assert first["last_user"] == "hi\nthere"
    assert first["system"] == "You are Bob."
    assert first["served_response"] == "hello\nhow are you?"
    assert first["served_by"] == "gen-7"
    assert first["continued"] is True
    assert first["reply_len"] == len("good thanks")
    assert first["depth_after"] == 2
    assert first["thumbs"] == 1
    assert first["prompt_id"] == prompt_id("c1", 2)
    assert (first["character_id"], first["user_hash"], first["source"], first["day"]) == (
        "bob",
        "u_c1",
        "internal",
        DAY,
    )

    second = p[5]
    assert [m["role"] for m in second["history"]] == ["user", "assistant", "user"]
    assert second["text"] == "user: hi\nthere\nassistant: hello\nhow are you?\nuser: good thanks"
    assert second["served_response"] == "great"
    assert (second["continued"], second["reply_len"], second["depth_after"], second["thumbs"]) == (True, 3, 1, -1)

    last = p[7]
    assert last["served_response"] is None
    assert last["served_by"] is None
    assert (last["continued"], last["reply_len"], last["depth_after"], last["thumbs"]) == (None, None, None, None)


def test_response_not_followed_by_user_is_not_continued():
    rows = [("c", 0, "user", "hey"), ("c", 1, "assistant", "hi!"), ("c", 2, "assistant", "still there?")]
    prompts, _ = cut_prompts(conversations(rows)).frames
    row = prompts.row(0, named=True)
    assert row["served_response"] == "hi!\nstill there?"
    assert (row["continued"], row["reply_len"], row["depth_after"]) == (False, None, 0)


def test_history_may_open_with_a_character_greeting():
    rows = [("g", 0, "assistant", "Welcome!"), ("g", 1, "user", "thanks"), ("g", 2, "assistant", "sure")]
    prompts, drops = cut_prompts(conversations(rows)).frames
    assert drops.height == 0
    assert prompts["text"].to_list() == ["assistant: Welcome!\nuser: thanks"]


def test_conversation_without_assistant_is_a_counted_drop_unless_kept():
    rows = [("solo", 0, "user", "anyone?"), ("solo", 1, "user", "hello?")]
    prompts, drops = cut_prompts(conversations(rows)).frames
    assert prompts.height == 0
    assert drops["reason_code"].to_list() == [NO_ASSISTANT_TURN]
    assert drops["row_id"].to_list() == [prompt_id("solo", 1)]
    assert drops["stage"].to_list() == ["prompts"]
    assert drops.schema == schema.DROPS

    kept, none = cut_prompts(conversations(rows), PromptConfig(keep_without_assistant=True)).frames
    assert none.height == 0
    assert kept["last_user"].to_list() == ["anyone?\nhello?"]
    assert kept["continued"].to_list() == [None]


def test_unanswered_last_turn_dropped_when_configured():
    prompts, drops = cut_prompts(conversations(HAND), PromptConfig(keep_unanswered=False)).frames
    assert sorted(prompts["cut_turn"].to_list()) == [2, 5]
    assert drops.select("row_id", "reason_code").rows() == [(prompt_id("c1", 7), NO_RESPONSE)]


@pytest.mark.parametrize("negative, expected", [(True, -1), (False, None)])
def test_regenerate_feedback(negative, expected):
    rows = [("r", 0, "user", "q"), ("r", 1, "assistant", "a", "regenerate")]
    prompts, _ = cut_prompts(conversations(rows), PromptConfig(regenerate_is_negative=negative)).frames
    assert prompts["thumbs"].to_list() == [expected]


def test_negative_feedback_wins_within_a_merged_turn_and_unknown_values_are_ignored():
    rows = [
        ("f", 0, "user", "q"),
        ("f", 1, "assistant", "a", "love"),
        ("f", 2, "assistant", "b", "report"),
        ("f", 3, "user", "q2"),
        ("f", 4, "assistant", "c", "meh"),
        ("f", 5, "user", "q3", "down"),  # feedback on a user message is not a label of any response
    ]
    prompts, _ = cut_prompts(conversations(rows)).frames
    assert prompts.sort("cut_turn")["thumbs"].to_list() == [-1, None, None]


def test_history_cap_keeps_the_last_k_turns():
    rows = [("k", i, "user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(9)]
    prompts, _ = cut_prompts(conversations(rows), PromptConfig(max_history_turns=3)).frames
    last = by_cut(prompts)[8]
    assert last["text"] == "user: m6\nassistant: m7\nuser: m8"
    assert by_cut(prompts)[0]["text"] == "user: m0"
    # labels still see the whole conversation, whatever the cap
    assert by_cut(prompts)[0]["depth_after"] == 4


def test_length_cap_trims_oldest_turns_and_drops_what_cannot_fit():
    rows = [
        ("L", 0, "user", "a" * 10),
        ("L", 1, "assistant", "b" * 10),
        ("L", 2, "user", "c" * 10),
        ("L", 3, "assistant", "d"),
        ("L", 4, "user", "e" * 60),
    ]
    fits = "assistant: bbbbbbbbbb\nuser: cccccccccc"
    prompts, drops = cut_prompts(conversations(rows), PromptConfig(max_text_chars=len(fits))).frames
    p = by_cut(prompts)
    assert p[2]["text"] == fits
    assert p[2]["history"][0]["role"] == "assistant"
    assert 4 not in p
    assert drops.select("row_id", "reason_code").rows() == [(prompt_id("L", 4), PROMPT_TOO_LONG)]
    assert "66 chars" not in drops["detail"][0] and "60 chars" in drops["detail"][0]


def test_system_messages_after_the_cut_do_not_leak():
    rows = [
        ("s", 0, "system", "persona v1"),
        ("s", 1, "user", "q1"),
        ("s", 2, "assistant", "a1"),
        ("s", 3, "system", "moderation note"),
        ("s", 4, "user", "q2"),
        ("s", 5, "assistant", "a2"),
    ]
    p = by_cut(cut_prompts(conversations(rows)).frames[0])
    assert p[1]["system"] == "persona v1"
    assert p[4]["system"] == "persona v1\nmoderation note"
    assert all(m["role"] != "system" for m in p[4]["history"])


def test_bad_messages_are_dropped_one_by_one_without_crashing():
    good = conversations([("ok", 0, "user", "q"), ("ok", 1, "assistant", "a")])
    bad = pl.DataFrame(
        {
            "message_id": ["b1", "b2", "b3", "zz"],
            "conversation_id": [None, "x", "x", "ok"],
            "turn_index": [0, 1, 2, 1],
            "role": ["user", "robot", "user", "assistant"],
            "text": ["t", "t", None, "dup"],
        }
    )
    frame = pl.concat([good, bad], how="diagonal_relaxed")
    prompts, drops = cut_prompts(frame).frames
    assert prompts["served_response"].to_list() == ["a"]
    reasons = dict(drops.select("row_id", "reason_code").iter_rows())
    # of two messages at one position the smaller message_id stays, whatever the row order
    assert reasons == {"b1": INVALID_MESSAGE, "b2": INVALID_MESSAGE, "b3": INVALID_MESSAGE, "zz": DUPLICATE_TURN_INDEX}
    assert set(drops["reason_code"]) <= set(MESSAGE_DROP_REASONS)
    assert drops.filter(pl.col("row_id") == "b2")["detail"][0].startswith("role is not one of")


def test_missing_optional_columns_are_tolerated_and_required_ones_named():
    minimal = pl.DataFrame(
        {"conversation_id": ["m", "m"], "turn_index": [0, 1], "role": ["user", "assistant"], "text": ["q", "a"]}
    )
    prompts, _ = cut_prompts(minimal).frames
    assert prompts["served_response"].to_list() == ["a"]
    with pytest.raises(ValueError, match="text"):
        cut_prompts(minimal.drop("text"))


def test_ids_depend_on_position_not_content_and_row_order_does_not_matter():
    base, _ = cut_prompts(conversations(HAND)).frames
    edited = (
        conversations(HAND).with_columns(pl.col("text").str.to_uppercase()).sample(fraction=1.0, shuffle=True, seed=3)
    )
    again, _ = cut_prompts(edited).frames
    assert base["prompt_id"].to_list() == again["prompt_id"].to_list()
    assert again["last_user"].to_list()[0] == "HI\nTHERE"
    assert base["prompt_id"].n_unique() == base.height


def test_empty_input_gives_empty_frames_with_contracts():
    prompts, drops = cut_prompts(schema.empty(schema.CONVERSATIONS)).frames
    assert prompts.height == 0 and drops.height == 0
    assert prompts.schema == schema.PROMPTS and drops.schema == schema.DROPS


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"max_history_turns": -1}, "max_history_turns"),
        ({"max_text_chars": -5}, "max_text_chars"),
        ({"keep_unanswered": False, "keep_without_assistant": True}, "keep_without_assistant"),
    ],
)
def test_bad_config_names_the_setting(kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        PromptConfig(**kwargs)


def test_summary_counts_user_turns():
    rows = HAND + [("solo", 0, "user", "anyone?")]
    prompts, drops = cut_prompts(conversations(rows)).frames
    s = summarize(prompts, drops)
    assert s["prompts"] == 3 and s["user_turns"] == 4 and s["answered"] == 2 and s["unanswered"] == 1
    assert s["drops_by_reason"] == {NO_ASSISTANT_TURN: 1}
    assert s["continued_rate"] == 1.0 and s["with_thumbs"] == 2


# ---------------------------------------------------------------- real data: BYU Chit-Chat


def load_chitchat(path: Path) -> tuple[dict, pl.DataFrame]:
    """The corpus as a conversations frame: the first sender plays the user, the other the assistant."""
    raw = json.loads(gzip.decompress(path.read_bytes()))
    cols: dict[str, list] = {
        k: [] for k in ("message_id", "conversation_id", "turn_index", "role", "text", "ts", "user_hash")
    }
    for cid, conv in raw.items():
        turns = conv.get("messages") or []
        if not turns or not turns[0]:
            continue
        user = turns[0][0]["sender"]
        k = 0
        for turn in turns:
            for m in turn:
                for key, value in zip(
                    cols,
                    (
                        f"{cid}:{k}",
                        cid,
                        k,
                        "user" if m["sender"] == user else "assistant",
                        m["text"],
                        m["timestamp"],
                        user,
                    ),
                ):
                    cols[key].append(value)
                k += 1
    frame = (
        pl.DataFrame(cols)
        .with_columns(
            pl.col("turn_index").cast(pl.Int32),
            pl.col("ts").str.to_datetime(time_zone="UTC"),
            pl.lit("external").alias("source"),
        )
        .with_columns(pl.col("ts").dt.date().alias("day"))
    )
    return raw, frame


@pytest.fixture(scope="module")
def chitchat(shared_data: Path) -> tuple[dict, pl.DataFrame]:
    return load_chitchat(shared_data / "chitchat_dataset.json.gz")


def reference_labels(conv: dict) -> list[dict]:
    """Straightforward per-conversation computation of the labels, to check the vectorized one."""
    msgs = [m for turn in conv["messages"] for m in turn]
    user = msgs[0]["sender"]
    runs: list[list] = []  # [role, texts, last index]
    for i, m in enumerate(msgs):
        role = "user" if m["sender"] == user else "assistant"
        if runs and runs[-1][0] == role:
            runs[-1][1].append(m["text"])
            runs[-1][2] = i
        else:
            runs.append([role, [m["text"]], i])
    out = []
    user_runs = [j for j, r in enumerate(runs) if r[0] == "user"]
    for rank, j in enumerate(user_runs):
        resp = runs[j + 1] if j + 1 < len(runs) else None
        nxt = runs[j + 2] if j + 2 < len(runs) else None
        out.append(
            {
                "cut_turn": runs[j][2],
                "last_user": "\n".join(runs[j][1]),
                "served_response": "\n".join(resp[1]) if resp else None,
                "continued": (nxt is not None) if resp else None,
                "reply_len": len("\n".join(nxt[1])) if nxt else None,
                "depth_after": len(user_runs) - rank - 1 if resp else None,
                "has_assistant": any(r[0] == "assistant" for r in runs),
            }
        )
    return out


def test_real_corpus_conservation_labels_and_speed(chitchat):
    raw, frame = chitchat
    start = time.perf_counter()
    prompts, drops = cut_prompts(frame).frames
    elapsed = time.perf_counter() - start
    assert prompts.schema == schema.PROMPTS

    # every user turn is a prompt or a counted drop, checked against an independent count
    reference = {cid: reference_labels(c) for cid, c in raw.items() if c.get("messages") and c["messages"][0]}
    n_user_turns = sum(len(v) for v in reference.values())
    turn_drops = drops.filter(pl.col("reason_code").is_in(TURN_DROP_REASONS))
    assert prompts.height + turn_drops.height == n_user_turns
    assert drops.filter(~pl.col("reason_code").is_in(TURN_DROP_REASONS)).height == 0
    assert set(prompts["prompt_id"]).isdisjoint(set(turn_drops["row_id"]))
    assert prompts["prompt_id"].n_unique() == prompts.height
    no_assistant = sum(1 for v in reference.values() for r in v if not r["has_assistant"])
    assert turn_drops.filter(pl.col("reason_code") == NO_ASSISTANT_TURN).height == no_assistant
    assert 60_000 < prompts.height < 75_000

    # labels of a random sample of prompts agree with the reference computation
    index = {(row["conversation_id"], row["cut_turn"]): row for row in prompts.iter_rows(named=True)}
    rng = random.Random(0)
    checked = 0
    for cid in rng.sample(sorted(reference), 300):
        for ref in reference[cid]:
            got = index.get((cid, ref["cut_turn"]))
            if got is None:
                continue
            checked += 1
            for key in ("last_user", "served_response", "continued", "reply_len", "depth_after"):
                assert got[key] == ref[key], (cid, ref["cut_turn"], key)
            assert got["history"][-1] == {"role": "user", "content": ref["last_user"]}
            roles = [m["role"] for m in got["history"]]
            assert all(a != b for a, b in zip(roles, roles[1:]))
    assert checked > 1000
    # generous bound on a shared 2-core machine; the full corpus cuts in about a second
    assert elapsed < 30


def test_monologue_responses_are_dropped_with_a_reason():
    from datetime import date

    from pipeline.prompts import RESPONSE_TOO_LONG, PromptConfig, cut_prompts

    rows = [("user", "hi"), ("assistant", "x" * 300), ("user", "ok"), ("assistant", "fine")]
    conv = pl.DataFrame(
        {
            "message_id": [f"m{i}" for i in range(4)],
            "conversation_id": ["c"] * 4,
            "turn_index": list(range(4)),
            "role": [r for r, _ in rows],
            "text": [t for _, t in rows],
            "user_hash": ["u"] * 4,
            "character_id": ["x"] * 4,
            "source": ["external"] * 4,
            "served_by": [None, "g", None, "g"],
            "feedback": [None] * 4,
            "day": [date(2026, 1, 1)] * 4,
        },
        schema_overrides={"feedback": pl.Utf8, "served_by": pl.Utf8},
    )
    prompts, drops = cut_prompts(conv, PromptConfig(max_response_chars=100)).frames
    assert prompts["last_user"].to_list() == ["ok"]
    assert drops["reason_code"].to_list() == [RESPONSE_TOO_LONG]
    assert cut_prompts(conv, PromptConfig(max_response_chars=0)).frames[0].height == 2
