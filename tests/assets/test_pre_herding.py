"""The reward models: what they learn from, which label, and a pairwise model that fails its check is
insufficient evidence: it warns, never blocks, and does not count as a judge."""

import json
from datetime import date, timedelta

import dagster as dg
import numpy as np
import polars as pl

from assets.curation import CurationSettings
from assets.generation import GenerationPlan, GenerationSettings, reward_model_dir, save_plan
from assets.resources import FlywheelSettings
from assets.reward_models import not_a_judge, reward_model_pairwise, reward_model_pointwise
from pipeline import schema
from pipeline.lake import Lake, Partition
from pipeline.user_split import assign_split
from quality.outcomes import WARNING, CheckOutcome
from training.rewards.engagement_label import TARGET

DAYS = [date(2026, 1, 1) + timedelta(days=k) for k in range(4)]
TOPICS = ["hiking", "cooking", "chess", "jazz", "painting", "soccer", "gardening", "movies"]
WARM = ["That sounds fun! What did you like most about it?", "Oh nice, tell me more, how did it go?"]
COLD = ["ok.", "no."]

FAILED = CheckOutcome("beats_length_baseline", False, "held-out pair_accuracy 0.422 vs length-only 0.422")


def _plan(parent: str) -> GenerationPlan:
    return GenerationPlan("gen-2", 2, parent, ["2026-01-11", "2026-01-12"], "2026-01-13T06:00:00+00:00")


def test_a_failed_pairwise_model_warns_as_insufficient_evidence_and_never_blocks():
    for parent in ("gen-0", "gen-1"):  # with or without a released parent
        outcome = not_a_judge(FAILED, _plan(parent))
        assert not outcome.passed and outcome.severity == WARNING and outcome.success
        assert outcome.as_check()["severity"] == "WARN"
        assert outcome.detail.startswith("insufficient evidence: ") and FAILED.detail in outcome.detail
        assert "does not count as a judge" in outcome.detail


def _day(day: date, n_conversations: int = 80) -> pl.DataFrame:
    """A day of served turns: a warm reply draws a long answer and a curt one a short one, and a recorded
    conversation ends after its second to fifth turn whatever was said."""
    rng = np.random.default_rng(day.toordinal())
    rows = []
    for c in range(n_conversations):
        user = f"u{(c + day.day * 7) % 90:03d}"
        turns = 2 + int(rng.integers(0, 4))
        for t in range(turns):
            warm = bool(rng.random() < 0.5)
            last = t == turns - 1
            question = f"{TOPICS[(c + t) % len(TOPICS)]} on {day}, turn {t}"
            rows.append(
                {
                    "prompt_id": f"{day}-c{c}-t{t}",
                    "conversation_id": f"{day}-c{c}",
                    "cut_turn": 2 * t,
                    "history": [{"role": "user", "content": question}],
                    "system": None,
                    "character_id": "robin",
                    "user_hash": user,
                    "source": "internal" if int(user[1:]) % 9 == 0 else "external",
                    "text": f"user: {question}",
                    "last_user": question,
                    "served_response": WARM[t % 2] if warm else COLD[t % 2],
                    "served_by": "gen-0",
                    "continued": not last,
                    "reply_len": None if last else int(rng.integers(40, 90) if warm else rng.integers(1, 4)),
                    "depth_after": turns - 1 - t,
                    "thumbs": None,
                    "day": day,
                }
            )
    return pl.DataFrame(rows, schema=schema.PROMPTS)


def test_the_reward_models_learn_from_every_earlier_day_and_choose_their_label(tmp_path):
    settings = FlywheelSettings(home=str(tmp_path))
    lake, curation = Lake(tmp_path), CurationSettings(eval_fraction=0.3)
    for day in DAYS:
        frame = _day(day)
        lake.write("unique_prompts", day, frame)
        split = assign_split(frame["user_hash"], frame["source"], curation.sampling_config())
        lake.write("prompts", day, frame.with_columns(split.alias("split"), pl.lit(0).alias("cluster_id")))
    plan = GenerationPlan("gen-1", 1, "gen-0", [d.isoformat() for d in DAYS[-2:]], "2026-01-05T06:00:00+00:00")
    save_plan(settings, plan)
    result = dg.materialize(
        [dg.AssetSpec("engagement_labels"), reward_model_pointwise, reward_model_pairwise],
        selection=[reward_model_pointwise, reward_model_pairwise],
        resources={"settings": settings, "curation": curation, "generation": GenerationSettings()},
        raise_on_error=False,
    )
    assert result.success  # whatever the pairwise check says, it does not stop the run
    mats = {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}
    pair_check = next(
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_key.to_user_string() == "reward_model_pairwise"
    )
    assert mats["reward_model_pairwise"]["counts_as_judge"].value == pair_check.passed
    point = mats["reward_model_pointwise"]
    data = point["training_data"].value
    # every curated day up to the window trains; the window's held-out users validate and never train
    assert data["train_days"] == len(DAYS) and data["validation_users"] > 0 and data["dropped_held_out_user"] > 0
    assert point["validation"].value == "the window's held-out users"
    # what a reply says tells how long the answer is, not where the recording ends: the label is reply length
    assert point["label"].value == "reply_len"
    meta = json.loads((reward_model_dir(settings, "gen-1", "pointwise") / "metadata.json").read_text())
    assert meta["label"] == TARGET and meta["label_choice"]["label"] == "reply_len"
    assert meta["label_choice"]["reply_len/stratified_auc"] > meta["label_choice"]["continued/stratified_auc"]
    card = (reward_model_dir(settings, "gen-1", "pointwise") / "README.md").read_text()
    assert "label_choice/label | reply_len" in card and "held_out/label/stratified_auc[continued]" in card
    assert "validated on the window's held-out users" in card and "training_data/train_days | 4" in card
    metrics = lake.read("reward_model_metrics", Partition.generation("gen-1"))
    assert metrics.filter(pl.col("section") == "label").height == 3
    assert mats["reward_model_pairwise"]["training_data"].value == data
