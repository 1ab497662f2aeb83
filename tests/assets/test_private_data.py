"""Nothing private leaves ingest: after a day with planted raw user ids, a planted salt and PII in good and
bad records, no file under FLYWHEEL_HOME (through `deduped_prompts`, what dataset and model cards are built
from), no file of the Dagster instance (its event log) and no event holds any of them. The one exception is by design: `conversations`, the landing table, keeps accepted
message text as it came (pseudonymised, not yet scrubbed); `scrubbed_conversations` is its scrubbed copy,
and only that copy is read further."""

import json
from datetime import date

import dagster as dg
import polars as pl

from assets.curation import CurationSettings, deduped_prompts, scrubbed_conversations, static_prompts
from assets.ingest import ingest
from assets.resources import FlywheelSettings
from pipeline.lake import Lake
from tests.assets.traffic import DAY, write_traffic

SALT = "planted-salt-5c0ffee-91d2"
RAW_IDS = [f"rawuser-{k}" for k in range(20)] + ["outside-user-77"]
PII = ["jane.roe@example.org", "+1 415 555 0199", "415-555-0142", "sam.doe+tag@mail.example.com"]
BOM = "\ufeff"


def _bad_lines() -> list[bytes]:
    """Quarantined records of every shape a payload can take, each with a raw id and PII."""
    ts = f"{DAY}T09:00:00Z"
    lines = [
        # unparseable: kept as scrubbed text, ids found by pattern
        f'{{"conversation_id": "q1", "user_id": "rawuser-8", "role": "user", "text": "mail {PII[0]}',
        f'{BOM}{{"conversation_id": "q2", "user_id": "rawuser-9", "role": "user", "text": "call {PII[1]}", "ts": "{ts}"}}',
        f"{{user_id: 'rawuser-10', text: 'write to {PII[3]}'}}",
        f'{{"conversation_id": "q4", "text": "ring {PII[2]}", "user_id": "rawuser-11',
        f'{{"user_id": "rawuser-12", "text": "{PII[0]}", "x": {"[" * 200}{"]" * 200}}}',
        f'{{"user_id": "rawuser-13", "text": "{PII[1]}", "turn_index": {"9" * 100}}}',
        f'{{"user_id": "rawuser-14", "role": "user", "ts": "{ts}", "text": "{PII[3]} ' + "z" * 70_000 + '"}',
        # parsed, then rejected: kept as JSON with ids hashed and strings scrubbed
        json.dumps({"conversation_id": "q8", "user_id": "rawuser-15", "role": "wizard", "text": PII[2], "ts": ts}),
        json.dumps(
            {"conversation_id": "q9", "user_id": "rawuser-16", "role": "user", "text": PII[0] + " x" * 20_000, "ts": ts}
        ),
        json.dumps(
            {
                "conversation_id": "q10",
                "user_id": "rawuser-17",
                "ts": ts,
                "messages": [{"role": "user", "content": f"hi {PII[1]}", "feedback": "meh"}],
            }
        ),
        json.dumps(
            {"conversation_id": "q11", "user_id": "rawuser-18", "role": "user", "text": f"{PII[3]} \ud800", "ts": ts}
        ),
    ]
    return [line.encode("utf-8", "surrogatepass") for line in lines] + [
        f'{{"conversation_id": "q12", "user_id": "rawuser-19", "text": "caf\xe9 {PII[0]}"}}'.encode("latin-1")
    ]


def _write_day(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_traffic(src, n_conversations=24, max_messages=6)
    path = src / f"{DAY}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r["user_id"] = "rawuser-" + r["user_id"].split("-")[1]
        if r["conversation_id"] in ("conv-1", "conv-2") and r["turn_index"] == 0:
            r["text"] += f" reach me at {PII[0]} or {PII[1]}"
    path.write_bytes(b"\n".join([json.dumps(r).encode() for r in rows] + _bad_lines()) + b"\n")
    outside = tmp_path / "outside.jsonl"
    outside.write_text(json.dumps({"user_id": "outside-user-77", "text": PII[3]}))
    (src / f"link-{DAY}.jsonl").symlink_to(outside)
    return src


def _hits(data: bytes, needles: list[str]) -> list[str]:
    return [n for n in needles if n.encode() in data]


def test_no_raw_id_salt_or_pii_in_the_lake_or_the_event_log(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_USER_SALT", SALT)
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    settings = FlywheelSettings(
        home=str(home),
        source_kind="folder",
        source_path=str(_write_day(tmp_path)),
        max_line_bytes=64 << 10,
        user_salt=dg.EnvVar("FLYWHEEL_USER_SALT"),
    )
    curation = CurationSettings(embed_backend="torch", history_start=DAY)
    with dg.DagsterInstance.local_temp(tempdir=str(dagster_home)) as instance:
        result = dg.materialize(
            [ingest, scrubbed_conversations, static_prompts, deduped_prompts],
            partition_key=DAY,
            resources={"settings": settings, "curation": curation},
            instance=instance,
        )
        assert result.success
        events = [dg.serialize_value(e) for e in instance.all_logs(result.run_id)]
        run_config = dg.serialize_value(instance.get_run_by_id(result.run_id).run_config)

    lake = Lake(home)
    day = date.fromisoformat(DAY)
    quarantine = lake.read("quarantine", day)
    assert quarantine.height >= 13 and lake.read("conversations", day).height > 100
    landing = {p.resolve() for p in lake.files("conversations", day)}
    # the planted PII did arrive: the landing table holds it, so the scan below can see it
    assert _hits(b"".join(pl.read_parquet(p).write_ndjson().encode() for p in landing), PII[:2]) == PII[:2]

    secrets = [*RAW_IDS, SALT]
    scanned = 0
    for root in (home, dagster_home):
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            data = path.read_bytes()
            if path.suffix == ".parquet":
                data += pl.read_parquet(path).write_ndjson().encode()  # decompressed too
            scanned += 1
            assert not _hits(data, secrets), path
            if path.resolve() not in landing:
                assert not _hits(data, PII), (path, _hits(data, PII))
    assert scanned > 20
    for text in [*events, run_config]:
        assert not _hits(text.encode(), secrets + PII)

    # quarantined ids are pseudonymised with the accepted rows' hash, not dropped
    from pipeline.schema import UserHasher

    raw = "\n".join(quarantine["raw"].to_list())
    for k in (8, 10, 11, 15, 17):
        assert UserHasher(SALT)(f"rawuser-{k}") in raw, k
    assert "[EMAIL]" in raw and "[PHONE]" in raw
