import json
from collections import Counter
from datetime import date, datetime

import pytest

from pipeline.ingest import ingest_day
from pipeline.schema import UserHasher
from pipeline.source_config import SourceConfig
from pipeline.sources import read_day


@pytest.fixture(scope="module")
def replay():
    cfg = SourceConfig(end_date="2026-01-14", replay_days=14)
    return cfg, {d: list(read_day(cfg, d)) for d in cfg.replay_days_list()}


def test_chitchat_replay_spans_the_days_and_keeps_every_conversation(replay):
    cfg, by_day = replay
    assert cfg.replay_days_list()[0] == date(2026, 1, 1)
    counts = {d: len(r) for d, r in by_day.items()}
    assert sum(counts.values()) == 7168  # every conversation of the corpus, once
    assert max(counts.values()) - min(counts.values()) <= 1  # spread evenly over the days
    ids = [r.value["conversation_id"] for recs in by_day.values() for r in recs]
    assert len(set(ids)) == len(ids)


def test_chitchat_replay_starts_each_conversation_on_its_day(replay):
    _, by_day = replay
    for day, recs in by_day.items():
        for r in recs[:50]:
            first = next((m for m in r.value["messages"] if isinstance(m, dict)), None)
            if first and isinstance(first.get("ts"), str):
                assert datetime.fromisoformat(first["ts"]).date() == day


def test_chitchat_roles_are_consistent_per_conversation(replay):
    _, by_day = replay
    recs = by_day[date(2026, 1, 7)]
    for r in recs[:200]:
        msgs = r.value["messages"]
        assert msgs[0]["role"] == "user"
        assert set(m["role"] for m in msgs) <= {"user", "assistant"}
    assert len({r.value["character_id"] for recs in by_day.values() for r in recs}) <= 40


def test_chitchat_replay_is_deterministic():
    cfg = SourceConfig(end_date="2026-03-31", replay_days=5)
    a = [r.value for r in read_day(cfg, date(2026, 3, 29))]
    b = [r.value for r in read_day(cfg, date(2026, 3, 29))]
    assert a == b and a


def test_chitchat_day_ingests_mostly_clean(replay):
    cfg, by_day = replay
    day = date(2026, 1, 8)
    res = ingest_day(iter(by_day[day]), day, hasher=UserHasher("t"))
    assert res.conversations.height > 1_000
    assert res.quarantine.height / res.records_read < 0.05
    assert set(res.conversations["source"].unique()) == {"internal", "external"}


def test_shared_copy_of_chitchat_matches_the_package(shared_data):
    cfg = SourceConfig(path=str(shared_data / "chitchat_dataset.json.gz"), end_date="2026-01-14", replay_days=14)
    pkg = SourceConfig(end_date="2026-01-14", replay_days=14)
    d = date(2026, 1, 10)
    a = [json.dumps(r.value, sort_keys=True) for r in read_day(cfg, d)]
    b = [json.dumps(r.value, sort_keys=True) for r in read_day(pkg, d)]
    assert Counter(a) == Counter(b)
