"""Nothing private leaves ingest: after a day with planted raw user ids, a planted salt and PII in good and
bad records, no file under FLYWHEEL_HOME (through `deduped_prompts`, what dataset and model cards are built
from; the landing table `conversations` included, its text scrubbed at ingest), no file of the Dagster
instance (its event log), no event, and no dataset or model card built from the day's prompts holds any of
them."""

import json
from datetime import date

import dagster as dg
import polars as pl
import pytest

from assets.curation import CurationSettings, deduped_prompts, scrubbed_conversations, static_prompts
from assets.ingest import ingest
from assets.resources import FlywheelSettings
from pipeline.lake import Lake
from pipeline.prompts import chat_messages
from pipeline.schema import UserHasher
from quality.daily import gather
from tests.assets.traffic import DAY, write_traffic

SALT = "planted-salt-5c0ffee-91d2"
RAW_IDS = [f"rawuser-{k}" for k in range(20)] + ["outside-user-77", "rawuser-esc", "rawuser-list", "rawuser-obj"]
PII = ["jane.roe@example.org", "+1 415 555 0199", "415-555-0142", "sam.doe+tag@mail.example.com"]
# the same kinds of PII in other scripts and spellings
OTHER_SCRIPTS = [
    "415-555-0142".translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    "415-555-0142".translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    "jane\u200b.roe@example.org",
    "jane.roe＠example.org",
]
PII += OTHER_SCRIPTS
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
        # unparseable, the user id key spelled with an escape, its value a list or an object
        f'{{"user\\u005fid": "rawuser-esc", "text": "{PII[0]}',
        f'{{"user_id": ["rawuser-list"], "text": "{PII[1]}',
        f'{{"user_id": {{"id": "rawuser-obj"}}, "text": "{PII[2]}',
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
        if r["conversation_id"] == "conv-3":
            # identifiers that carry a person, and PII in other scripts
            r["conversation_id"] = f"x-pii-{r['user_id']}:session-1"
            r["message_id"] = f"msg-{PII[2]}-{r['turn_index']}"
            r |= {"character_id": PII[0], "surface": f"tel:{PII[1]}", "served_by": f"gen-{PII[3]}"}
            r["text"] += " or " + OTHER_SCRIPTS[r["turn_index"] % len(OTHER_SCRIPTS)]
    path.write_bytes(b"\n".join([json.dumps(r).encode() for r in rows] + _bad_lines()) + b"\n")
    # a file named for a person: its name is stored scrubbed
    named = {"conversation_id": "n1", "user_id": "rawuser-5", "role": "user", "text": "hi", "ts": f"{DAY}T09:00:00Z"}
    (src / f"{PII[0]}-{DAY}.jsonl").write_text(json.dumps(named) + "\n" + json.dumps(named | {"role": "bot"}))
    outside = tmp_path / "outside.jsonl"
    outside.write_text(json.dumps({"user_id": "outside-user-77", "text": PII[3]}))
    (src / f"link-{DAY}.jsonl").symlink_to(outside)
    return src


def _hits(data: bytes, needles: list[str]) -> list[str]:
    return [n for n in needles if n.encode() in data]


def _scan(root) -> int:
    """Every file under `root` (Parquet decompressed too) holds none of the planted secrets or PII."""
    scanned = 0
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data += pl.read_parquet(path).write_ndjson().encode()
        scanned += 1
        assert not _hits(data, [*RAW_IDS, SALT, *PII]), (path, _hits(data, [*RAW_IDS, SALT, *PII]))
    return scanned


@pytest.fixture(scope="module")
def planted_day(tmp_path_factory):
    """One folder-source day with planted ids, salt and PII, run through ingest .. deduped_prompts."""
    tmp_path = tmp_path_factory.mktemp("planted")
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    src = _write_day(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_USER_SALT", SALT)
        settings = FlywheelSettings(
            home=str(home),
            source_kind="folder",
            source_path=str(src),
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
            mats = {
                m.asset_key.to_user_string(): m.materialization.metadata
                for m in result.get_asset_materialization_events()
            }
    return {
        "src": src,
        "home": home,
        "dagster_home": dagster_home,
        "events": events,
        "run_config": run_config,
        "metadata": mats,
    }


def test_no_raw_id_salt_or_pii_in_the_lake_or_the_event_log(planted_day):
    home, src = planted_day["home"], planted_day["src"]
    lake = Lake(home)
    day = date.fromisoformat(DAY)
    quarantine = lake.read("quarantine", day)
    conversations = lake.read("conversations", day)
    assert quarantine.height >= 13 and conversations.height > 100
    # the planted PII did arrive, in accepted and rejected records, so the scans below can see it
    sent = b"".join(p.read_bytes() for p in src.glob("*.jsonl")).decode("unicode_escape", "replace")
    assert _hits(sent.encode("utf-8", "surrogatepass"), PII) == PII
    # ... and was replaced at ingest, before the landing table was written, and counted there
    planted = conversations.filter(pl.col("text").str.contains("reach me at") & (pl.col("turn_index") == 0))
    assert planted["text"].str.contains(r"reach me at \[EMAIL\] or \[PHONE\]").all() and planted.height == 2
    assert planted["pii_types"].to_list() == [["EMAIL", "PHONE"]] * 2
    counts = dict(lake.read("pii_counts", day).select("pii_type", "items").iter_rows())
    assert counts["EMAIL"] >= 2 and counts["PHONE"] >= 2
    # what users see: the per-type counts on both the landing table and the scrubbed table
    for asset in ("conversations", "scrubbed_conversations"):
        shown = {
            r.data["pii_type"]: r.data["rows"] for r in planted_day["metadata"][asset]["pii_by_type"].value.records
        }
        assert shown["EMAIL"] == counts["EMAIL"] and shown["PHONE"] == counts["PHONE"], asset
    assert gather(lake, day).pii_counts == counts  # and the quality report

    # every file, the landing table included, and every event: zero hits
    assert _scan(home) > 20
    assert _scan(planted_day["dagster_home"]) > 0
    for text in [*planted_day["events"], planted_day["run_config"]]:
        assert not _hits(text.encode(), [*RAW_IDS, SALT, *PII])

    # quarantined ids are pseudonymised with the accepted rows' hash, not dropped
    raw = "\n".join(quarantine["raw"].to_list())
    for k in (8, 10, 11, 15, 17):
        assert UserHasher(SALT)(f"rawuser-{k}") in raw, k
    assert "[EMAIL]" in raw and "[PHONE]" in raw
    assert any(f.startswith("[EMAIL]") for f in quarantine["source_file"].to_list())
    # identifiers that carry a person were pseudonymised or scrubbed, and the other scripts' PII replaced
    person = conversations.filter(pl.col("character_id") == "[EMAIL]")
    assert person.height > 1 and (person["surface"] == "tel:[PHONE]").all()
    assert person["conversation_id"].str.starts_with("c_").all() and person["message_id"].str.starts_with("m_").all()


def test_dataset_and_model_cards_of_the_day_hold_nothing_private(planted_day, tmp_path):
    from pipeline.digest import rows_digest
    from training.cards import write_model_card
    from training.policy.dataset_lineage import BuildResult, counts_by_reason, to_dataset

    lake = Lake(planted_day["home"])
    day = date.fromisoformat(DAY)
    prompts = lake.read("deduped_prompts", day)
    rows = [
        {
            "messages": chat_messages(p["system"], p["history"], p["served_response"]),
            "source": "served_engaged",
            "prompt_id": p["prompt_id"],
        }
        for p in prompts.iter_rows(named=True)
    ]
    # the planted conversations reach the cards, scrubbed
    assert any("[EMAIL]" in m["content"] for r in rows for m in r["messages"])
    manifest = {
        "kind": "sft",
        "content_hash": rows_digest(rows),
        "rows": len(rows),
        "drops": counts_by_reason(lake.read("drops", day)),
        "users": prompts["user_hash"].n_unique(),
    }
    dataset = to_dataset(rows, {"messages": "messages", "source": "string", "prompt_id": "string"})
    frame = pl.DataFrame({"prompt_id": [r["prompt_id"] for r in rows]})
    drops = lake.read("drops", day)
    out = BuildResult(dataset, frame, drops, manifest).save(tmp_path / "sft")
    model = tmp_path / "model"
    model.mkdir()
    write_model_card(
        model,
        title="sft policy",
        base_model="base",
        data_hashes={"sft": manifest["content_hash"]},
        metrics={"rows": len(rows), "train_loss": 1.0},
        summary=f"trained on {len(rows)} prompts of {DAY}",
    )
    assert (out / "README.md").is_file() and (model / "README.md").is_file()
    assert _scan(out) >= 5 and _scan(model) == 1
