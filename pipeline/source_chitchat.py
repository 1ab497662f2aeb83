"""The default traffic: the BYU Chit-Chat corpus replayed over the configured days.

Conversations are ordered by their first timestamp and spread evenly over the `replay_days` days ending at
`end_date`; each conversation's timestamps are shifted by one offset so it starts on its day at its original
time of day. The first sender of a conversation is the user, the other speaker plays the character.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from pipeline.maybe_gzip import open_maybe_gzip
from pipeline.source_config import Record, SourceConfig, parse_iso, replay_offsets


def chitchat_path(cfg: SourceConfig) -> Path:
    if cfg.path:
        return Path(cfg.path)
    import chitchat_dataset  # the package ships the corpus as dataset.json beside its module

    return Path(chitchat_dataset.__file__).with_name("dataset.json")


@lru_cache(maxsize=2)
def load_json_corpus(path: str) -> dict:
    with open_maybe_gzip(path) as f:
        return json.load(f)


@lru_cache(maxsize=4)
def _chitchat_plan(path: str, end_date: str, replay_days: int) -> tuple[dict[date, list[tuple[int, str]]], dict]:
    """Day -> [(ordinal, conv_id)], and conv_id -> time offset, for one replay setting."""
    corpus = load_json_corpus(path)
    cfg = SourceConfig(end_date=end_date, replay_days=replay_days)
    starts = []
    for cid, conv in corpus.items():
        first = _first_timestamp(conv)
        if first is not None:
            starts.append((cid, first))
    offsets = replay_offsets(starts, cfg)
    by_day: dict[date, list[tuple[int, str]]] = {}
    fallback_day = cfg.first_day
    for ordinal, cid in enumerate(corpus):
        # a conversation without any readable timestamp still gets a day, so ingest can quarantine it
        day = offsets[cid][0] if cid in offsets else fallback_day
        by_day.setdefault(day, []).append((ordinal, cid))
    return by_day, offsets


def _first_timestamp(conv: dict) -> datetime | None:
    for turn in conv.get("messages") or []:
        for m in turn or []:
            try:
                return parse_iso(m["timestamp"])
            except (KeyError, TypeError, ValueError):
                continue
    return None


def read_chitchat(cfg: SourceConfig, day: date) -> Iterator[Record]:
    path = chitchat_path(cfg)
    corpus = load_json_corpus(str(path))
    by_day, offsets = _chitchat_plan(str(path), cfg.end_date, cfg.replay_days)
    for ordinal, cid in by_day.get(day, []):
        conv = corpus[cid]
        shift = offsets[cid][1] if cid in offsets else timedelta(0)
        msgs = [m for turn in conv.get("messages") or [] for m in (turn or [])]
        user_sender = msgs[0].get("sender") if msgs and isinstance(msgs[0], dict) else None
        messages = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                messages.append(m)  # left as is: ingest quarantines it as wrong_type
                continue
            ts = m.get("timestamp")
            try:
                ts = (parse_iso(ts) + shift).isoformat()
            except (TypeError, ValueError):
                pass  # keep the bad value for ingest to quarantine
            messages.append(
                {
                    "id": f"{cid}:{i}",
                    "role": "user" if m.get("sender") == user_sender else "assistant",
                    "content": m.get("text"),
                    "ts": ts,
                }
            )
        prompt = conv.get("prompt") or ""
        record = {
            "conversation_id": cid,
            "user_id": str(user_sender),
            # the corpus has 36 opening prompts; each plays the part of one character card
            "character_id": "cc-" + hashlib.blake2b(prompt.encode(), digest_size=4).hexdigest(),
            "served_by": cfg.served_by,
            "surface": cfg.surface,
            "messages": messages,
        }
        yield Record(source_file=f"chitchat_dataset/{path.name}", line=ordinal, raw="", value=record)
