"""Folder days of traffic unlike the default: each user in one conversation, no thumbs, prompts that never repeat,
long topical conversations, persona chats. Every day file is one message per line in the canonical format."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path


def _chitchat() -> list[list[dict]]:
    from pipeline.source_chitchat import chitchat_path, load_json_corpus
    from pipeline.source_config import SourceConfig

    corpus = load_json_corpus(str(chitchat_path(SourceConfig())))
    return [[m for turn in conv["messages"] for m in turn] for conv in corpus.values()]


def _write_day(folder: Path, day: str, conversations: list[list[tuple[str, str]]], tag: str) -> None:
    """One user per conversation (`{tag}-user-{i}`), a fifth of them internal testers, no thumbs."""
    rows = []
    for c, messages in enumerate(conversations):
        for i, (role, text) in enumerate(messages):
            rows.append(
                {
                    "conversation_id": f"{tag}-{day}-{c}",
                    "turn_index": i,
                    "text": text,
                    "role": role,
                    "user_id": f"{tag}-{day}-user-{c}",
                    "ts": f"{day}T{8 + c % 12:02d}:{i % 60:02d}:{c % 60:02d}Z",
                    "source": "internal" if c % 5 == 0 else "external",
                }
            )
    (folder / f"{day}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _as_turns(messages: list[dict]) -> list[tuple[str, str]]:
    first = messages[0]["sender"]
    return [("user" if m["sender"] == first else "assistant", m["text"]) for m in messages]


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def specific_questions(folder: Path, days: list[str], per_day: int = 120, max_messages: int = 8) -> None:
    """Chit-Chat conversations without their openings, every kept message at least 30 characters and never seen
    before in the traffic: no two prompts alike, so no engagement pair can be mined."""
    seen: set[str] = set()
    picked: list[list[tuple[str, str]]] = []
    for messages in _chitchat():
        kept = []
        for m in messages[2:]:
            key = _norm(m["text"])
            if len(key) < 30 or key in seen:
                continue
            kept.append(m)
            if len(kept) == max_messages:
                break
        turns = _as_turns(kept) if len(kept) >= 4 else []
        if len({r for r, _ in turns}) < 2:
            continue
        seen.update(_norm(m["text"]) for m in kept)
        picked.append(turns)
        if len(picked) == per_day * len(days):
            break
    for k, day in enumerate(days):
        _write_day(folder, day, picked[k * per_day : (k + 1) * per_day], "specific")


def long_topical(folder: Path, days: list[str], per_day: int = 40, min_messages: int = 20) -> None:
    """The longest Chit-Chat conversations, whole (up to 40 messages): few users, many turns each."""
    long = [_as_turns(m[:40]) for m in _chitchat() if len(m) >= min_messages]
    long = [t for t in long if len({r for r, _ in t}) == 2]
    for k, day in enumerate(days):
        _write_day(folder, day, long[k * per_day : (k + 1) * per_day], "long")


def _persona_chats(path: Path) -> Iterator[list[tuple[str, str]]]:
    with gzip.open(path, "rb") as f:
        for row in csv.DictReader(io.StringIO(f.read().decode("utf-8"))):
            turns = []
            for line in (row.get("Best Generated Conversation") or "").splitlines():
                speaker, _, text = line.partition(":")
                if text.strip() and speaker.strip() in ("User 1", "User 2"):
                    turns.append(("user" if speaker.strip() == "User 1" else "assistant", text.strip()))
            if len(turns) >= 4:
                yield turns


def persona_chats(folder: Path, days: list[str], shared_data: Path, per_day: int = 100) -> None:
    """Synthetic-Persona-Chat conversations (machine-written, persona-grounded) as user traffic."""
    chats = list(_persona_chats(shared_data / "synthetic_persona_chat_valid.csv.gz"))
    for k, day in enumerate(days):
        _write_day(folder, day, chats[k * per_day : (k + 1) * per_day], "persona")
