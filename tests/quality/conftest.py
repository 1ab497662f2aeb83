"""Small, well-formed frames of each table; tests break one thing at a time."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import polars as pl
import pytest

from pipeline import schema

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DAY = date(2024, 5, 1)
HASH = schema.UserHasher("test-salt")

USER_TEXTS = ["hi there!", "what do you like to read?", "any tips for learning guitar?", "thanks, that helps"]
BOT_TEXTS = [
    "hello! how is your day going?",
    "mostly science fiction.",
    "practice chords slowly every day.",
    "glad to hear!",
]


def make_conversations(n_conv: int = 12, turns: int = 6) -> pl.DataFrame:
    rows = []
    t0 = datetime(2024, 5, 1, 9, tzinfo=UTC)
    for c in range(n_conv):
        for t in range(turns):
            user = t % 2 == 0
            texts = USER_TEXTS if user else BOT_TEXTS
            rows.append(
                {
                    "message_id": f"m{c:03d}-{t}",
                    "conversation_id": f"c{c:03d}",
                    "turn_index": t,
                    "role": "user" if user else "assistant",
                    "text": texts[(c + t // 2) % len(texts)],
                    "ts": t0 + timedelta(minutes=c * 10 + t),
                    "user_hash": HASH(f"user-{c % 5}"),
                    "character_id": f"char-{c % 3}",
                    "source": "internal" if c % 4 else "external",
                    "served_by": None if user else "gen-0",
                    "surface": "app",
                    "feedback": "up" if (not user and c % 5 == 0) else None,
                    "day": DAY,
                }
            )
    return schema.conform(pl.DataFrame(rows), schema.CONVERSATIONS)


def make_quarantine() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "day": [DAY] * 3,
            "source_file": ["traffic.jsonl"] * 3,
            "line": [4, 17, 23],
            "reason_code": ["invalid_json", "empty_text", "unknown_role"],
            "detail": ["Expecting value", "text is empty", "role 'bot'"],
            "raw": ['{"text": ', '{"text": ""}', '{"role": "bot"}'],
        },
        schema=schema.QUARANTINE,
    )


def _history(n_user: int) -> list[dict[str, str]]:
    h = []
    for i in range(n_user):
        if i:
            h.append({"role": "assistant", "content": BOT_TEXTS[i % len(BOT_TEXTS)]})
        h.append({"role": "user", "content": USER_TEXTS[i % len(USER_TEXTS)]})
    return h


def make_prompts(n: int = 12, *, with_split: bool = True) -> pl.DataFrame:
    rows = []
    for i in range(n):
        hist = _history(1 + i % 3)
        rows.append(
            {
                "prompt_id": f"p{i:03d}",
                "conversation_id": f"c{i:03d}",
                "cut_turn": 2 * (i % 3),
                "history": hist,
                "system": None,
                "character_id": f"char-{i % 3}",
                "user_hash": HASH(f"user-{i % 6}"),
                "source": "internal",
                "text": "\n".join(f"{m['role']}: {m['content']}" for m in hist),
                "last_user": hist[-1]["content"],
                "served_response": BOT_TEXTS[i % len(BOT_TEXTS)],
                "served_by": "gen-0",
                "continued": i % 2 == 0,
                "reply_len": 12 if i % 2 == 0 else None,
                "depth_after": i % 3,
                "thumbs": [1, None, -1][i % 3],
                "day": DAY,
            }
        )
    df = schema.conform(pl.DataFrame(rows, schema_overrides={"history": pl.List(schema.MESSAGE)}), schema.PROMPTS)
    if with_split:
        # users 0..3 train, 4 eval_internal, 5 eval_user: disjoint by construction
        split = {HASH(f"user-{u}"): s for u, s in enumerate(["train"] * 4 + ["eval_internal", "eval_user"])}
        df = df.with_columns(
            split=pl.col("user_hash").replace_strict(split, return_dtype=pl.Utf8),
            cluster_id=pl.Series([i % 4 for i in range(n)], dtype=pl.Int64),
        )
    return df


def make_clusters() -> pl.DataFrame:
    sizes = [40, 30, 20, 10]
    return pl.DataFrame(
        {"cluster_id": [0, 1, 2, 3], "size": sizes, "share": [s / 100 for s in sizes], "label": ["a", "b", "c", "d"]}
    )


def set_value(df: pl.DataFrame, column: str, row: int, value) -> pl.DataFrame:
    """`df` with one cell replaced (keeping the column's dtype)."""
    values = df[column].to_list()
    values[row] = value
    return df.with_columns(pl.Series(column, values, dtype=df.schema[column]))


def failed(result) -> set[tuple[str, str | None]]:
    """(expectation, column) of every failed expectation of a SuiteResult."""
    return {(o.name, o.column) for o in result.failed}


@pytest.fixture(scope="session")
def gx_runtime():
    """One GX context for the whole session: it is slow to import and set up, fast to reuse."""
    from quality import gx_engine

    return gx_engine.runtime()


@pytest.fixture()
def make() -> SimpleNamespace:
    """Factories of well-formed frames: make.conversations(), make.quarantine(), make.prompts(), make.clusters()."""
    return SimpleNamespace(
        conversations=make_conversations,
        quarantine=make_quarantine,
        prompts=make_prompts,
        clusters=make_clusters,
        hash=HASH,
        day=DAY,
        set=set_value,
        failed=failed,
    )
