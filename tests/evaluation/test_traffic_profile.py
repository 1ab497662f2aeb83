"""The traffic's profile: what it offers each judge against its minimum."""

import polars as pl

from evaluation.traffic_profile import (
    TrafficCounts,
    lacking,
    reward_models_lacking_data,
    summary,
    traffic_profile,
)
from evaluation.user_simulator import UserSimulatorConfig
from training.rewards.judge_minimums import JudgeMinimums


def _turns(users: int, per_user: int, stop_every: int) -> pl.DataFrame:
    n = users * per_user
    return pl.DataFrame(
        {
            "user_hash": [f"u{i % users}" for i in range(n)],
            "conversation_id": [f"c{i % users}" for i in range(n)],
            "context": ["hi"] * n,
            "reply": ["hello"] * n,
            "continued": [i % stop_every != 0 for i in range(n)],
        }
    )


def _profile(pairs: int, labels: list, users: int, slice_users: dict) -> pl.DataFrame:
    pool = pl.DataFrame({"cluster_id": [0, 0, 1], "thumbs": [1, None, -1]}, schema_overrides={"thumbs": pl.Int8})
    counts = TrafficCounts(
        pairs=pairs,
        held_out_pairs=0,
        pointwise_labels=pl.Series(labels, dtype=pl.Boolean),
        simulator_turns=_turns(users, 4, 3),
        slice_users=slice_users,
        pool=pool,
    )
    return traffic_profile(counts, JudgeMinimums(), UserSimulatorConfig(), min_slice_users=20, min_eval_pairs=30)


def test_traffic_without_pairs_lacks_the_pairwise_judge_only():
    profile = _profile(2, [True] * 30 + [False] * 10, users=60, slice_users={"eval_internal": 20, "eval_user": 25})
    assert reward_models_lacking_data(profile) == ["pairwise"]
    short = lacking(profile)
    # the held-out pairs only change how the judge is validated; they are listed, never a reason not to train
    assert short == {"pairwise": ["preference pairs (engagement + annotation)", "held-out users' pairs"]}
    row = profile.filter(pl.col("measure").str.starts_with("preference pairs")).row(0, named=True)
    assert (row["value"], row["minimum"], row["enough"]) == (2, 10, False)
    assert "annotations_path" in row["fix"] and "not trained" in row["consequence"]
    assert "pairwise: 2 preference pairs (engagement + annotation) (minimum 10)" in summary(profile)
    thumbs = dict(profile.filter(pl.col("measure").str.starts_with("thumbs")).select("measure", "value").iter_rows())
    assert thumbs == {"thumbs up in the window pool": 1, "thumbs down in the window pool": 1}


def test_every_shortfall_is_named_with_what_follows():
    profile = _profile(0, [True] * 5, users=3, slice_users={"eval_internal": 2, "eval_user": 30})
    assert reward_models_lacking_data(profile) == ["pointwise", "pairwise"]
    short = lacking(profile)
    assert set(short) == {"pairwise", "pointwise", "simulator", "win-rate gates"}
    assert short["win-rate gates"] == ["eval_internal users"]
    sim = profile.filter(pl.col("judge") == "simulator")
    assert sim.filter(~pl.col("enough"))["consequence"].str.contains("A/B readout is insufficient").all()


def test_traffic_with_everything_says_so():
    profile = _profile(40, [True] * 30 + [False] * 10, users=60, slice_users={"eval_internal": 20, "eval_user": 25})
    profile = profile.filter(pl.col("measure") != "held-out users' pairs")
    assert lacking(profile) == {} and summary(profile) == "the traffic offers every judge and gate its minimum"
    informational = profile.filter(pl.col("minimum").is_null())
    assert informational["enough"].is_null().all() and informational.height >= 4
