"""The ab_readout asset on simulated users: the readout follows the arms' replies."""

import json
from datetime import date

import dagster as dg
import numpy as np
import polars as pl

from assets.ab_readout import CALIBRATION, ab_readout
from assets.curation import CurationSettings
from assets.generation import GenerationPlan, GenerationSettings, save_plan
from assets.resources import AbSettings, FlywheelSettings
from pipeline import schema
from pipeline.lake import Lake, Partition
from pipeline.user_split import held_out_rows

DAYS = ["2026-01-04", "2026-01-05"]
WARM = ["That sounds fun! What did you like most about it?", "Oh nice, tell me more, how did it go?"]
COLD = ["ok.", "no."]


def _pool(day: str, seed: int) -> pl.DataFrame:
    """A day's pool where a warm, curious served reply is continued far more often than a curt one."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(240):
        warm = bool(rng.random() < 0.5)
        question = f"I went hiking on {day}, trip {i}"
        rows.append(
            {
                "prompt_id": f"{day}-p{i}",
                "conversation_id": f"{day}-c{i}",
                "cut_turn": 0,
                "history": [{"role": "user", "content": question}],
                "system": None,
                "character_id": "robin",
                "user_hash": f"u{i % 60}",
                "source": "internal" if i % 60 < 10 else "external",
                "text": f"user: {question}",
                "last_user": question,
                "served_response": WARM[i % 2] if warm else COLD[i % 2],
                "served_by": "gen-0",
                "continued": bool(rng.random() < (0.85 if warm else 0.2)),
                "reply_len": 20,
                "depth_after": 2,
                "thumbs": None,
                "day": date.fromisoformat(day),
            }
        )
    frame = pl.DataFrame(rows, schema=schema.PROMPTS)
    # users u0..u29 train the reward models; the others are held out
    split = [
        ("train" if int(u[1:]) < 30 else ("eval_internal" if int(u[1:]) < 40 else "eval_user"))
        for u in frame["user_hash"]
    ]
    return frame.with_columns(pl.Series("split", split), pl.lit(0).alias("cluster_id"))


def _responses(pool: pl.DataFrame, treatment: list[str]) -> pl.DataFrame:
    evals = pool.filter(pl.col("split") != "train").head(40)
    rows = []
    for policy, replies in (("gen-0", COLD), ("gen-1", treatment)):
        for i, r in enumerate(evals.iter_rows(named=True)):
            rows.append(
                {
                    "prompt_id": r["prompt_id"],
                    "slice": r["split"],
                    "policy": policy,
                    "context": json.dumps([{"role": "user", "content": r["last_user"]}]),
                    "response": replies[i % 2],
                }
            )
    return pl.DataFrame(rows)


def _run(
    tmp_path,
    treatment: list[str],
    unique_extra: int = 0,
    eval_outside_pool: bool = False,
    earlier: str | None = None,
    min_users: int = 2,
):
    home = tmp_path / "home"
    settings = FlywheelSettings(home=str(home))
    lake = Lake(home)
    days = ([earlier] if earlier else []) + DAYS
    pools = [_pool(d, k) for k, d in enumerate(days)]
    evals = pools[-1]
    for d, p in zip(days, pools):
        lake.write("prompts", date.fromisoformat(d), p)
        if unique_extra:
            # the day's deduped prompts: the sampled pool is a subset of them
            more = (
                pl.concat([_pool(d, 10 + k) for k in range(-(-unique_extra // 240))])
                .head(unique_extra)
                .with_columns(
                    pl.format("{}-x{}", "prompt_id", pl.int_range(pl.len())),
                    pl.format("{}-x{}", "conversation_id", pl.int_range(pl.len())),
                    pl.format("v{}", pl.int_range(pl.len())).alias("user_hash"),
                )
            )
            lake.write("unique_prompts", date.fromisoformat(d), pl.concat([p, more]).drop("split", "cluster_id"))
            if eval_outside_pool:  # offline evaluation judged held-out deduped turns the pool does not hold
                evals = held_out_rows(more, CurationSettings().sampling_config())
    save_plan(settings, GenerationPlan("gen-1", 1, "gen-0", DAYS, "2026-01-06T06:00:00+00:00"))
    lake.write("eval_responses", Partition.generation("gen-1"), _responses(evals, treatment))
    result = dg.materialize(
        [dg.AssetSpec("offline_eval"), ab_readout],
        selection=[ab_readout],
        resources={
            "settings": settings,
            "curation": CurationSettings(),
            "generation": GenerationSettings(),
            # a handful of simulated users' training users: the minimum is lowered to read the arms' preference
            "ab": AbSettings(source="users", simulated_users=6000, n_bootstrap=200, min_simulator_users=min_users),
        },
    )
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    return lake, meta, checks


def test_users_prefer_the_warmer_arm(tmp_path):
    lake, meta, checks = _run(tmp_path, WARM)
    gen = Partition.generation("gen-1")
    lifts = lake.read("ab_lifts", gen)
    assert lifts["source"].to_list() == ["users", "users"] and lifts["simulated"].all()
    assert lifts["simulated_from"][0].startswith("simulated from tfidf-char2-4+logreg engagement model")
    assert (lifts["delta_ci_low"] > 0).all() and lifts["verdict"][0] == "ship"
    # the interval over the replayed prompts is filled in too, and agrees
    assert (lifts["prompt_ci_low"] > 0).all() and (lifts["prompt_ci_high"] >= lifts["prompt_ci_low"]).all()
    assert meta["verdict"].value == "ship" and "simulated from" in meta["source"].value
    summary = meta["simulator"].value
    # trained on the training users of the days up to the window, never on the held-out users it is validated on
    # nor on the conversations it replays
    data = summary["training_data"]
    assert summary["rows_read"] == data["train_rows"] and data["train_days"] == 2
    assert data["dropped_held_out_user"] > 0 and summary["dropped_excluded_user"] == 0
    assert summary["rows_used"] == data["train_rows"] - summary["dropped_replayed_conversation"]
    assert summary["heldout_users"] == data["validation_users"] and summary["heldout_auc"] > 0.7
    scores = lake.read("ab_sim_scores", gen)
    assert scores.height == 40 and (scores["p_continue_treatment"] > scores["p_continue_control"]).all()
    assert checks["sample_ratio"].passed and checks[CALIBRATION].passed
    assert lake.read("ab_exposures", gen)["simulated"].all()


def test_identical_arms_are_not_shipped(tmp_path):
    lake, meta, _ = _run(tmp_path, COLD)
    lifts = lake.read("ab_lifts", Partition.generation("gen-1"))
    assert lifts["lift"].abs().max() < 0.05
    assert meta["verdict"].value == "inconclusive"


def test_the_simulator_learns_from_every_deduped_turn_of_the_window(tmp_path):
    # the sampled pool leaves few held-out turns outside the replayed conversations; the deduped prompts have more
    _, meta, checks = _run(tmp_path, WARM, unique_extra=400)
    summary = meta["simulator"].value
    data = summary["training_data"]
    # every deduped turn is read: the training users' teach it, the held-out users' validate it
    assert data["train_rows"] + data["dropped_held_out_user"] == 2 * (240 + 400)
    assert summary["rows_used"] == data["train_rows"] - summary["dropped_replayed_conversation"]
    assert summary["rows_used"] >= 50 and summary["heldout_rows"] == data["validation_rows"]
    assert meta["verdict"].value == "ship" and checks["sample_ratio"].passed


def test_the_simulator_learns_from_the_days_before_the_window(tmp_path):
    _, meta, _ = _run(tmp_path, WARM, unique_extra=100, earlier="2026-01-03")
    data = meta["simulator"].value["training_data"]
    assert data["train_days"] == 3 and data["dropped_after_window"] == 0


def test_the_conversations_replayed_from_outside_the_pool_are_not_learnt_from(tmp_path):
    # the eval prompts are held-out deduped turns, not pool rows: held-out users the simulator is validated on and
    # never reads, so there is nothing of theirs to drop
    lake, meta, _ = _run(tmp_path, WARM, unique_extra=400, eval_outside_pool=True)
    replayed = lake.read("eval_responses", Partition.generation("gen-1"))["prompt_id"].n_unique()
    assert replayed >= 20
    summary = meta["simulator"].value
    assert summary["dropped_replayed_conversation"] == 0 and summary["dropped_excluded_user"] == 0
    assert summary["rows_used"] == summary["training_data"]["train_rows"]


def test_a_simulator_below_its_users_minimum_gives_insufficient_evidence(tmp_path):
    # the same warm arm, read by a simulator that learnt from fewer users than the default minimum of 50
    lake, meta, _ = _run(tmp_path, WARM, min_users=50)
    lifts = lake.read("ab_lifts", Partition.generation("gen-1"))
    assert meta["verdict"].value == "insufficient" and lifts["verdict"][0] == "insufficient"
    evidence = meta["evidence"].value
    assert evidence["users"] < 50 and not evidence["sufficient"] and "users (< 50)" in evidence["reason"]
    assert evidence["turns"] == meta["simulator"].value["rows_used"] and evidence["refits"] >= 2
    # the interval with the simulator's own error is at least as wide as the simulated users' alone
    width = lifts["total_ci_high"] - lifts["total_ci_low"]
    assert (width >= lifts["delta_ci_high"] - lifts["delta_ci_low"]).all() and lifts["model_sd"].is_not_null().all()
