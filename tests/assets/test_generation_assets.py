"""One tiny generation end to end, in process: reward models, gen-0 policy, datasets, SFT -> DPO -> GRPO."""

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.curation import CURATION_ASSETS, CurationSettings
from assets.generation import GenerationSettings, current_plan, generation_plan, policy_dir
from assets.herding import HERDING_ASSETS
from assets.ingest import ingest
from assets.pre_herding import PRE_HERDING_ASSETS
from assets.resources import AbSettings, FlywheelSettings, ReleaseSettings
from assets.training_launcher import TrainingLauncher
from pipeline.lake import Lake, Partition
from tests.assets.test_curation_assets import write_traffic
from training.policy.steer_data import REPAIRED, steer_prompts

DAYS = ("2026-01-05", "2026-01-06")


def _annotations(path: Path, n: int = 60) -> Path:
    """Pairwise annotations where kindness wins, half the time with the shorter reply: length alone
    cannot predict them, so the length-only baseline sits near a coin flip."""
    kind_short, rude_long = (
        "Happy to help, friend!",
        "whatever, I really could not care less about any of that, go away",
    )
    kind_long, rude_short = "That sounds lovely, thank you so much for telling me about it, I am glad you asked!", "no."
    rows = []
    for i in range(n):
        good, bad = (kind_short, rude_long) if i % 2 else (kind_long, rude_short)
        a_first = i % 3 == 0
        rows.append(
            {
                "kind": "pairwise",
                "prompt": f"can you help me with question number {i}?",
                "response_a": good if a_first else bad,
                "response_b": bad if a_first else good,
                "preferred": "a" if a_first else "b",
                "strength": 2,
            }
        )
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.mark.integration
def test_tiny_generation_end_to_end(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k, day in enumerate(DAYS):
        write_traffic(src, n_conversations=150, max_messages=10, day=day, offset=150 * k)
    settings = FlywheelSettings(home=str(tmp_path / "home"), source_kind="folder", source_path=str(src))
    resources = {
        "settings": settings,
        "curation": CurationSettings(
            topics=4, retain_fraction=0.9, eval_fraction=0.2, embed_backend="torch", history_start=DAYS[0]
        ),
        "generation": GenerationSettings(
            window_days=2,
            pretrain_steps=5,
            candidate_prompts=6,
            samples_per_prompt=2,
            steer_samples=2,
            max_new_tokens=8,
            sft_steps=2,
            dpo_steps=2,
            grpo_steps=1,
            reward_train_rows=2000,
            pair_mining_rows=2000,
            annotations_path=str(_annotations(tmp_path / "annotations.jsonl")),
        ),
        # the traffic profile counts what the release gates and the A/B readout need
        "release": ReleaseSettings(),
        "ab": AbSettings(),
        "launcher": TrainingLauncher(),
    }
    for day in DAYS:
        assert dg.materialize([ingest, *CURATION_ASSETS], partition_key=day, resources=resources).success

    upstream = [dg.AssetSpec("prompts")]
    result = dg.materialize(
        [*upstream, generation_plan, *PRE_HERDING_ASSETS, *HERDING_ASSETS],
        selection=[a.key for a in [generation_plan, *PRE_HERDING_ASSETS, *HERDING_ASSETS]],
        resources=resources,
        raise_on_error=False,
    )
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    assert checks[("reward_model_pointwise", "beats_length_baseline")].passed, checks[
        ("reward_model_pointwise", "beats_length_baseline")
    ].description
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    plan = current_plan(settings)
    assert plan.generation == "gen-1" and plan.days == list(DAYS)
    home = Path(settings.home)
    for stage in ("sft", "dpo", "grpo"):
        folder = home / "models" / "gen-1" / stage
        assert (folder / "model.safetensors").is_file() and (folder / "metrics.json").is_file()
    assert policy_dir(settings, "gen-1") == home / "models" / "gen-1" / "grpo"
    lake = Lake(home)
    candidates = lake.read("candidates", Partition.generation("gen-1"))
    traffic = candidates.filter(pl.col("rules_kept").is_null())
    assert traffic.height == 6 * 2 and candidates["rm_pointwise"].null_count() == 0
    # the training character cards' prompts, two rule-checked candidates each, and the replies repaired to keep
    # their card's rules of form (each keeps every rule, and its original is among the sampled ones)
    cards = candidates.filter(pl.col("rules_kept").is_not_null())
    assert cards["prompt_id"].str.starts_with("steer:").all()
    repaired = cards["generator"].str.ends_with(REPAIRED)
    assert (~repaired).sum() == 2 * steer_prompts().height
    assert cards.filter(repaired)["rules_kept"].all()
    assert mats_of(result)["candidates"]["card_replies_repaired"].value == repaired.sum()
    # every sampled reply says whether it ended on its own, and a repaired one says what its original did
    assert candidates["ended"].null_count() == 0
    originals = cards.filter(~repaired).select("prompt_id", "sample_idx", pl.col("ended").alias("original"))
    assert (
        cards.filter(repaired)
        .join(originals, on=["prompt_id", "sample_idx"])
        .select((pl.col("ended") == pl.col("original")).all())
        .item()
    )
    mats = mats_of(result)
    assert mats["candidates"]["cut_off_rate"].value == pytest.approx(float((~candidates["ended"]).mean()))
    assert {"slope", "cards"} <= set(mats["sft_dataset"]["length_trend"].value)
    assert mats["sft_checkpoint"]["steps"].value == 2  # reported back through Pipes
    assert "content_hash" in mats["sft_dataset"]
    annotated = mats["reward_model_pairwise"]["annotations"].value
    assert annotated["records_read"] == annotated["pairs"] == 60 and annotated["quarantined"] == 0
    metrics = lake.read("reward_model_metrics", Partition.generation("gen-1"))
    assert {"pointwise", "pairwise"} == set(metrics["model"])


def mats_of(result) -> dict:
    return {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}


def test_gen_0_built_with_another_seed_is_not_mixed_with_this_one(tmp_path):
    from assets.generation import BASE, GenerationPlan, save_plan
    from assets.herding import policy_base

    settings = FlywheelSettings(home=str(tmp_path))
    save_plan(settings, GenerationPlan("gen-1", 1, BASE, ["2026-01-05"], "now"))
    base = policy_dir(settings, BASE)
    base.mkdir(parents=True)
    (base / "policy_manifest.json").write_text(json.dumps({"n_params": 10, "config": {"seed": 0}}))
    result = dg.materialize(
        [policy_base],
        resources={"settings": settings, "generation": GenerationSettings(seed=1, policy_model=None)},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "built with seed 0, not 1" in failure and "fresh FLYWHEEL_HOME" in failure
    # the same seed reuses it
    same = dg.materialize(
        [policy_base], resources={"settings": settings, "generation": GenerationSettings(seed=0, policy_model=None)}
    )
    assert same.success
