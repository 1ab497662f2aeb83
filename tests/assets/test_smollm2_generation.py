"""One generation of SmolLM2-135M-Instruct at very small sizes, through the same assets as the tiny policy."""

import json
from pathlib import Path

import dagster as dg
import pytest

from assets.curation import CURATION_ASSETS, CurationSettings
from assets.generation import GenerationSettings, generation_plan
from assets.herding import HERDING_ASSETS
from assets.ingest import ingest
from assets.pre_herding import PRE_HERDING_ASSETS
from assets.release import RELEASE_ASSETS, AbSettings, ReleaseSettings
from assets.resources import FlywheelSettings
from assets.training_launcher import TrainingLauncher
from pipeline.lake import Lake, Partition
from tests.assets.test_curation_assets import write_traffic
from tests.assets.test_generation_assets import _annotations
from training.policy import smollm2

OK, WHY = smollm2.available()
DAYS = ("2026-01-05", "2026-01-06")


@pytest.mark.integration
@pytest.mark.timeout(1800)  # a 135M model on a CPU: ~6 minutes on an idle 2-core box
@pytest.mark.skipif(not OK, reason=f"SmolLM2 not available: {WHY}")
def test_one_smollm2_generation_with_lora(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k, day in enumerate(DAYS):
        write_traffic(src, n_conversations=150, max_messages=10, day=day, offset=150 * k)
        # conversation ids are unique across days in real traffic; the helper numbers each day from 0
        path = src / f"{day}.jsonl"
        path.write_text(path.read_text().replace('"conv-', f'"d{k}-conv-'))
    settings = FlywheelSettings(home=str(tmp_path / "home"), source_kind="folder", source_path=str(src))
    sizes = smollm2.Smollm2Sizes(
        use_lora=True,
        candidate_prompts=4,
        samples_per_prompt=2,
        max_new_tokens=6,
        sft_steps=1,
        dpo_steps=1,
        grpo_steps=1,
        train_batch_size=2,
        train_max_length=128,
        eval_prompts=2,
        steerability_samples=1,
    ).resources()
    resources = {
        "settings": settings,
        "curation": CurationSettings(
            topics=4, retain_fraction=0.9, eval_fraction=0.2, embed_backend="torch", history_start=DAYS[0]
        ),
        "generation": GenerationSettings(
            window_days=2,
            reward_train_rows=2000,
            pair_mining_rows=2000,
            annotations_path=str(_annotations(tmp_path / "annotations.jsonl")),
            **sizes["generation"],
        ),
        # two prompts a slice: only the replies-only gates (steerability, train/eval) can decide at this size, and
        # what is under test is that a generation runs through and is recorded, not its verdicts
        "release": ReleaseSettings(bootstrap_resamples=200, min_decided_gates=2, **sizes["release"]),
        "ab": AbSettings(source="users", simulated_users=4000, n_bootstrap=200),
        "launcher": TrainingLauncher(),
    }
    for day in DAYS:
        assert dg.materialize([ingest, *CURATION_ASSETS], partition_key=day, resources=resources).success

    generation_assets = [generation_plan, *PRE_HERDING_ASSETS, *HERDING_ASSETS, *RELEASE_ASSETS]
    result = dg.materialize(
        [dg.AssetSpec("prompts"), *generation_assets],
        selection=[a.key for a in generation_assets],
        resources=resources,
        raise_on_error=False,
    )
    mats = {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}
    failures = [e.message for e in result.all_events if e.is_failure]
    assert {"policy_base", "sft_checkpoint", "dpo_checkpoint", "grpo_checkpoint", "offline_eval"} <= set(mats), failures

    home = Path(settings.home)
    base = smollm2.smollm2_dir(home / "models")
    manifest = json.loads((base / "policy_manifest.json").read_text())
    assert mats["policy_base"]["content_hash"].value == manifest["content_hash"] == smollm2.folder_hash(base)
    # LoRA adapters were trained and merged: each stage saved a full model, and said it used LoRA
    for stage in ("sft", "dpo", "grpo"):
        folder = home / "models" / "gen-1" / stage
        assert (folder / "model.safetensors").is_file()
        assert json.loads((folder / "metrics.json").read_text()).get("use_lora") is True, stage
    lake = Lake(home)
    responses = lake.read("eval_responses", Partition.generation("gen-1"))
    assert set(responses["policy"]) == {"gen-0", "gen-1"}
    # the A/B readout simulated users on the engagement model's scores of both arms' replies
    assert {"ab_readout", "generation_record"} <= set(mats), failures
    lifts = lake.read("ab_lifts", Partition.generation("gen-1"))
    assert set(lifts["source"]) == {"users"} and lifts["simulated_from"][0].startswith("simulated from tfidf")
    record = lake.read("generations", Partition.generation("gen-1")).row(0, named=True)
    assert record["parent"] == "gen-0"
