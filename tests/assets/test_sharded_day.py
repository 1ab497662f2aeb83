"""A day consolidated in shards gives the lake of one process: every table, drop row (kept id and reason),
topic, the embedding cache and the cross-day history are the same at 1, 2, 3 and 4 shards, with one worker
(in process) or two (Dagster's multiprocess executor), when the input files arrive in another order, and when a
shard step is killed and the run re-executed from its failure."""

import json
import random
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from assets.cross_day import day_vectors, embedded_texts
from assets.curation import CURATION_ASSETS, CurationSettings
from assets.ingest import ingest
from assets.resources import FlywheelSettings
from pipeline.embed import embed_texts
from pipeline.embed_config import CPU_BACKEND
from tests.assets.day_runs import snapshot
from tests.assets.traffic import DAY, write_traffic

DAYS = [DAY, (date.fromisoformat(DAY) + timedelta(days=1)).isoformat()]


def _traffic(folder: Path, files: int, seed: int | None) -> Path:
    """Two days of real conversations (the second repeats part of the first: cross-day duplicates), each day
    dealt over `files` files of a day folder; with `seed`, conversations are dealt and lines ordered at random."""
    folder.mkdir(parents=True)
    scratch = folder.parent / f"{folder.name}-whole"
    scratch.mkdir()
    for day, offset in zip(DAYS, (0, 40)):
        write_traffic(scratch, n_conversations=70, day=day, offset=offset)
        rows = [json.loads(line) for line in (scratch / f"{day}.jsonl").read_text().splitlines()]
        convs = sorted({r["conversation_id"] for r in rows})
        rng = random.Random(seed)
        if seed is not None:
            rng.shuffle(convs)
            rng.shuffle(rows)
        target = {c: i % files for i, c in enumerate(convs)}
        day_dir = folder / f"day={day}"
        day_dir.mkdir()
        for f in range(files):
            lines = [json.dumps(r) for r in rows if target[r["conversation_id"]] == f]
            (day_dir / f"part-{f}.jsonl").write_text("\n".join(lines))
    return folder


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    return {"given": _traffic(root / "given", 3, None), "shuffled": _traffic(root / "shuffled", 3, seed=11)}


def _resources(home: Path, src: Path, shards: int) -> dict:
    return {
        "settings": FlywheelSettings(home=str(home), source_kind="folder", source_path=str(src)),
        # a day's few hundred prompts make several embedding batches: shards get different ones
        "curation": CurationSettings(history_start=DAY, shards=shards, workers=1, topics=4),
    }


def _consolidate(home: Path, src: Path, shards: int) -> dict[str, bytes]:
    for day in DAYS:
        result = dg.materialize([ingest, *CURATION_ASSETS], partition_key=day, resources=_resources(home, src, shards))
        assert result.success
    assert not any((home / "shuffle").rglob("*.parquet")), "the collect step removes the run's shuffle files"
    return snapshot(home, records_by_identity=True)


@pytest.fixture(scope="module")
def one_process_home(traffic, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("n1") / "home"
    _consolidate(home, traffic["given"], 1)
    return home


@pytest.fixture(scope="module")
def one_process(one_process_home):
    """The lake of one shard, the reference every other run is compared with."""
    return snapshot(one_process_home, records_by_identity=True)


@pytest.mark.integration
def test_the_shards_encode_as_the_one_process_stage_does(traffic, one_process_home):
    """The shard steps use the curation's own embedding config (on a CPU the per-text int8 default, whose vector of
    a text does not depend on its batch), so the day's vectors are those of the embedding stage called once on
    all its texts, which is what makes every number of shards give the same lake."""
    curation = _resources(one_process_home, traffic["given"], 1)["curation"]
    settings = FlywheelSettings(home=str(one_process_home))
    config = curation.embed_config(one_process_home)
    assert config.backend == CPU_BACKEND
    lake = settings.lake()
    for day in DAYS:
        index, vectors = day_vectors(lake, date.fromisoformat(day), curation, settings)
        assert index["model_id"].unique().to_list() == [config.model_id]
        prompts = lake.read("deduped_prompts", date.fromisoformat(day))
        texts = embedded_texts(prompts, curation)
        assert index["prompt_id"].to_list() == prompts["prompt_id"].to_list()
        assert np.array_equal(vectors, embed_texts(texts, config)), day


def _differences(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@pytest.mark.integration
@pytest.mark.parametrize("shards", [2, 3, 4])
def test_any_number_of_shards_gives_the_lake_of_one(shards, traffic, one_process, tmp_path):
    lake = _consolidate(tmp_path / "home", traffic["given"], shards)
    assert any(k.startswith("lake/drops/") for k in lake) and any(k.startswith("lake/clusters/") for k in lake)
    assert any(k.startswith("state/semantic_dedup/") for k in lake) and "lake/embeddings" in lake
    assert _differences(one_process, lake) == []


@pytest.mark.integration
def test_another_input_file_order_gives_the_same_lake(traffic, one_process, tmp_path):
    lake = _consolidate(tmp_path / "home", traffic["shuffled"], 2)
    # ingest's record fingerprints the files it read, which are other files; everything it wrote is the same
    assert [k for k in _differences(one_process, lake) if not k.startswith("state/steps/ingest/")] == []


def consolidation_job() -> dg.JobDefinition:
    """The code location's consolidation job on Dagster's multiprocess executor, two steps at a time, each step
    started afresh (the code location's executor forks steps from a server started once per run, with the
    environment of that moment: the crash point set for one run would reach the next one too)."""
    from assets.definitions import defs

    return defs.resolve_job_def("consolidation").with_executor_def(
        dg.multiprocess_executor.configured({"max_concurrent": 2})
    )


@pytest.mark.integration
def test_two_workers_and_a_killed_shard_give_the_same_lake(traffic, one_process, tmp_path, monkeypatch):
    """The second day's embedding shards run as steps of Dagster's multiprocess executor, two at a time; shard 1
    is killed (SIGKILL) after encoding, before its file is written, and the run is re-executed from its failure.
    The steps around it run in process (each step of a multiprocess run is a process that loads the code)."""
    home, src = tmp_path / "home", traffic["given"]
    resources = _resources(home, src, 3)
    embeddings = [dg.AssetKey("prompt_embeddings")]
    before = [
        ingest,
        *(
            a
            for a in CURATION_ASSETS
            if a.key.to_user_string() in ("scrubbed_conversations", "static_prompts", "deduped_prompts")
        ),
    ]
    after = [a for a in CURATION_ASSETS if a.key.to_user_string() in ("unique_prompts", "topics", "prompts")]
    assert dg.materialize([ingest, *CURATION_ASSETS], partition_key=DAYS[0], resources=resources).success
    assert dg.materialize(before, partition_key=DAYS[1], resources=resources).success

    run_config = {
        "resources": {
            "settings": {"config": {"home": str(home), "source_kind": "folder", "source_path": str(src)}},
            "curation": {"config": {"history_start": DAY, "shards": 3, "workers": 2, "topics": 4}},
        }
    }
    job, tags = dg.reconstructable(consolidation_job), {"dagster/partition": DAYS[1]}
    with dg.instance_for_test() as instance:
        monkeypatch.setenv("FLYWHEEL_CRASH_AT", "embed_shard_1:1")
        run = {"run_config": run_config, "tags": tags, "asset_selection": embeddings}
        with dg.execute_job(job, instance, **run) as failed:
            assert not failed.success
            assert {e.step_key for e in failed.all_events if e.is_step_failure} == {
                "prompt_embeddings.embed_shard[shard_1]"
            }
        monkeypatch.delenv("FLYWHEEL_CRASH_AT")
        options = dg.ReexecutionOptions.from_failure(failed.run_id, instance)
        with dg.execute_job(job, instance, reexecution_options=options, **run) as again:
            assert again.success
            ran = {e.step_key for e in again.all_events if e.is_step_success}
            assert ran == {"prompt_embeddings.embed_shard[shard_1]", "prompt_embeddings.collect_embeddings"}
    assert dg.materialize(after, partition_key=DAYS[1], resources=resources).success
    assert not any((home / "shuffle").rglob("*.parquet"))
    assert _differences(one_process, snapshot(home, records_by_identity=True)) == []
