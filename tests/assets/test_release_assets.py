"""In-process runs of the release assets on a tiny generation faked upstream: a two-day pool, tiny
policies, reward models on a hashing embedder, and the SFT rows the train/eval gate reads."""

import json
import os
import shutil
from datetime import date

import dagster as dg
import polars as pl
import pytest

from tests.training.tiny_policy import one_cpu_thread, tiny_policy_dir  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assets import release, reward_models  # noqa: E402
from assets.curation import CurationSettings  # noqa: E402
from assets.generation import (  # noqa: E402
    GenerationPlan,
    GenerationSettings,
    dataset_dir,
    next_plan,
    policy_dir,
    reward_model_dir,
    save_plan,
)
from assets.resources import AbSettings, FlywheelSettings, ReleaseSettings  # noqa: E402
from evaluation.ab_test import VERDICTS  # noqa: E402
from evaluation.offline_eval import GATES, select_eval_prompts  # noqa: E402
from pipeline.lake import Lake, Partition  # noqa: E402
from tests.evaluation.eval_pool import eval_pool, fit_reward_models, hashing_embed  # noqa: E402
from training.rewards.reward_model import load_reward_model  # noqa: E402

DAYS = ["2026-01-04", "2026-01-05"]
SPLITS = ("train", "eval_internal", "eval_user")
UPSTREAM = [
    "grpo_checkpoint",
    "reward_model_pointwise",
    "reward_model_pairwise",
    "sft_dataset",
    "preference_dataset",
    "rl_prompts",
    "reward_model_report",
]


def build_generation(home, plant_eval_prompt: bool = False) -> FlywheelSettings:
    """gen-1 in progress with everything offline_eval and generation_record read from upstream."""
    settings = FlywheelSettings(home=str(home))
    lake = Lake(home)
    pools = [eval_pool(d) for d in DAYS]
    for d, p in zip(DAYS, pools):
        lake.write("prompts", date.fromisoformat(d), p)
    pool = pl.concat(pools)
    save_plan(settings, GenerationPlan("gen-1", 1, "gen-0", DAYS, "2026-01-06T06:00:00+00:00"))
    # the new policy is a copy of its parent: identical weights and seeds give identical replies
    for gen in ("gen-0", "gen-1"):
        shutil.copytree(tiny_policy_dir(), policy_dir(settings, gen))
    fit_reward_models(
        pool, reward_model_dir(settings, "gen-1", "pointwise"), reward_model_dir(settings, "gen-1", "pairwise")
    )
    train = pool.filter(pl.col("split") == "train")
    planted = select_eval_prompts(pool, per_slice=3)[0]["prompt_id"][0]  # one that is evaluated
    sft_ids = train["prompt_id"].to_list() + ([planted] if plant_eval_prompt else [])
    sft = dataset_dir(settings, "gen-1", "sft")
    sft.mkdir(parents=True)
    pl.DataFrame(
        {"row_id": [f"{p}/served" for p in sft_ids], "prompt_id": sft_ids, "source": ["served_engaged"] * len(sft_ids)}
    ).write_parquet(sft / "rows.parquet")
    (sft / "manifest.json").write_text(json.dumps({"kind": "sft", "rows": len(sft_ids), "content_hash": "c0ffee" * 8}))
    gen = Partition.generation("gen-1")
    lake.write("candidate_prompts", gen, train.with_columns(pl.lit("gen-1").alias("generation")))
    lake.write(
        "reward_model_metrics",
        gen,
        pl.DataFrame(
            {
                "section": ["pointwise", "pairwise", "summary"],
                "metric": ["auc", "pair_accuracy", "pays_for_artifacts"],
                "value": [0.71, 0.64, 0.0],
                "model": ["pointwise", "pairwise", "pointwise"],
                "generation": ["gen-1"] * 3,
            }
        ),
    )
    return settings


def _resources(settings: FlywheelSettings, **ab) -> dict:
    return {
        "settings": settings,
        "curation": CurationSettings(),
        "generation": GenerationSettings(eval_prompts=3, max_new_tokens=6),
        # six replies a side: the artifact gate decides at this toy size only with its minimum lowered to match
        "release": ReleaseSettings(steerability_samples=1, bootstrap_resamples=200, min_artifact_replies=6),
        "ab": AbSettings(**{"source": "simulate", "simulated_users": 4000, "n_bootstrap": 200, **ab}),
    }


def _materialize(settings: FlywheelSettings, **ab) -> dg.ExecuteInProcessResult:
    stubs = [dg.AssetSpec(key) for key in UPSTREAM]
    return dg.materialize(
        [*stubs, *release.RELEASE_ASSETS],
        selection=release.RELEASE_ASSETS,
        resources=_resources(settings, **ab),
        raise_on_error=False,
    )


@pytest.fixture(autouse=True)
def hashing_scorers(monkeypatch):
    # the judges offline_eval loads (`load_judges`, which leaves out a judge recorded as not trained)
    monkeypatch.setattr(
        reward_models,
        "load_scorer",
        lambda settings, gen, kind, curation=None: load_reward_model(
            reward_model_dir(settings, gen, kind), embed_fn=hashing_embed
        ),
    )


def _checks(result) -> dict:
    return {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}


@pytest.mark.integration
def test_release_records_a_generation_and_reports_it(tmp_path):
    settings = build_generation(tmp_path / "home")
    result = _materialize(settings)
    assert result.success
    assert _materialized(result) == {"offline_eval", "ab_readout", "generation_record", "generation_report"}
    checks = _checks(result)
    assert {name for (asset, name) in checks if asset == "offline_eval"} == set(GATES)
    # three held-out prompts per slice from a few users: the win-rate gates have too little evidence to decide, and
    # so has the fluency gate (six paired replies, with or without its reference model), which warns and blocks
    # nothing; every other gate passes
    short = {"win_rate_ceiling", "slice_divergence", "fluency_regression"}
    failed = {name: c.description for (_, name), c in checks.items() if not c.passed}
    assert set(failed) == short and all(d.startswith("insufficient") for d in failed.values()), failed
    assert all(checks[("offline_eval", n)].severity == dg.AssetCheckSeverity.WARN for n in short)
    # no IFEval prompts configured: its check says it did not run, and no verdict names it
    assert checks[("offline_eval", "ifeval_regression")].description.startswith("not run: no IFEval prompts")

    lake = Lake(tmp_path / "home")
    gen = Partition.generation("gen-1")
    # identical policies: every pair is a tie for both judges on both slices
    wr = lake.read("eval_win_rates", gen)
    assert wr.height == 4 and wr["win_rate"].to_list() == [0.5] * 4 and (wr["ties"] == wr["n"]).all()
    assert set(wr["n"]) == {3}  # eval_prompts per slice
    records = lake.read("eval_records", gen)
    assert set(records["slice"]) == {"eval_internal", "eval_user", "steerability", "steerability_test"}
    assert {
        "winrate/pointwise",
        "winrate/pairwise",
        "rm_pointwise",
        "style/n_chars",
        "steerability/all_followed",
    } <= set(records["metric"])
    assert set(records["policy"]) == {"gen-0", "gen-1"} and set(records["generation"]) == {"gen-1"}
    responses = lake.read("eval_responses", gen)
    assert responses.filter(pl.col("slice") == "steerability").height == 2 * 50
    # the fluency summary is written whether or not the reference model could score (then it says why)
    assert set(lake.read("eval_fluency", gen)["role"]) >= {"new", "parent"}

    record = lake.read("generations", gen).row(0, named=True)
    assert (record["number"], record["parent"], record["gate"]) == (1, "gen-0", "passed")
    assert (record["released"], record["blocked_by"]) == (True, [])
    assert record["insufficient"] == sorted(short)
    verdicts = {g["gate"]: g for g in json.loads(record["gate_detail"])}
    assert "ifeval_regression" not in verdicts
    assert verdicts["win_rate_ceiling"]["outcome"] == "insufficient" and verdicts["artifact_drift"]["outcome"] == "pass"
    assert verdicts["win_rate_ceiling"]["evidence"]["slices"]["eval_user"]["prompts"] == 3
    steer = lake.read("eval_steerability", gen).filter((pl.col("level") == "overall") & (pl.col("role") == "new"))
    assert record["steer_if_heldout"] == pytest.approx(steer["following_rate"][0])
    assert record["steer_violation_heldout"] == pytest.approx(steer["violation_rate"][0])
    assert record["win_rate_user"] == record["win_rate_internal"] == 0.5  # identical policies tie
    lifts = dict(lake.read("ab_lifts", gen).select("metric", "lift").iter_rows())
    assert (record["sim_breadth_lift"], record["sim_depth_lift"]) == (lifts["breadth"], lifts["depth"])
    assert record["window_end"] == date(2026, 1, 5)
    metrics, inputs = json.loads(record["metrics"]), json.loads(record["inputs"])
    assert metrics["reward_models"] == {"pointwise": {"auc": 0.71}, "pairwise": {"pair_accuracy": 0.64}}
    assert metrics["ab"]["simulated"] and record["ab_source"] == "simulate"
    assert record["ab_verdict"] == metrics["ab"]["verdict"] in VERDICTS
    assert inputs["datasets"]["sft"] == "c0ffee" * 8
    assert len(inputs["window"]["prompts_sha256"]["2026-01-04"]) == 64
    assert len(inputs["reward_models"]["pairwise"]["sha256"]) == 64
    # the catalog's view parses the JSON columns
    via_sql = lake.query("SELECT generation, metrics->>'$.ab.verdict' AS verdict FROM generations").row(0)
    assert via_sql == ("gen-1", record["ab_verdict"])
    # the simulated logs are in the lake, marked as such
    assert lake.read("ab_exposures", gen)["simulated"].all()

    # recording the generation is what starts the next one
    assert next_plan(settings, GenerationSettings(), "now").generation == "gen-2"
    html = (tmp_path / "home" / "reports" / "generations" / "index.html").read_text()
    assert "gen-1" in html and "Simulated A/B" in html and "http://" not in html
    assert "pill insufficient" in html and "Replies side by side" in html


@pytest.mark.integration
def test_an_eval_prompt_in_the_sft_rows_blocks_the_record(tmp_path):
    settings = build_generation(tmp_path / "home", plant_eval_prompt=True)
    result = _materialize(settings)
    assert not result.success
    gate = _checks(result)[("offline_eval", "train_eval_disjoint")]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert gate.metadata["n_overlap_by_id"].value == 1
    assert _materialized(result) == {"offline_eval"}
    lake = Lake(tmp_path / "home")
    assert not lake.exists("generations")
    assert lake.read("release_gates", Partition.generation("gen-1")).filter(pl.col("severity") == "error")[
        "gate"
    ].to_list() == ["train_eval_disjoint"]
    # the run stopped, so the next run re-does the same generation
    assert next_plan(settings, GenerationSettings(), "now").generation == "gen-1"
    # materialized on its own, the record keeps the generation as blocked: never a parent, and the flywheel moves on
    alone = dg.materialize(
        [*[dg.AssetSpec(k) for k in UPSTREAM + ["offline_eval", "ab_readout"]], release.generation_record],
        selection=[release.generation_record],
        resources=_resources(settings),
        raise_on_error=False,
    )
    assert alone.success
    record = lake.read("generations", Partition.generation("gen-1")).row(0, named=True)
    assert (record["released"], record["blocked_by"], record["gate"]) == (False, ["train_eval_disjoint"], "failed")
    assert record["ab_verdict"] is None and "ab" not in json.loads(record["metrics"])
    assert record["steer_if_heldout"] is not None and record["win_rate_user"] is not None
    following = next_plan(settings, GenerationSettings(), "now")
    assert (following.generation, following.parent) == ("gen-2", "gen-0")


def test_ab_readout_from_lake_logs_fails_the_sample_ratio_check(tmp_path):
    settings = FlywheelSettings(home=str(tmp_path / "home"))
    save_plan(settings, GenerationPlan("gen-1", 1, "gen-0", DAYS, "2026-01-06T06:00:00+00:00"))
    lake = Lake(tmp_path / "home")
    users = [f"u{i}" for i in range(1000)]
    arms = ["control" if i < 600 else "treatment" for i in range(1000)]  # planned 50/50, logged 60/40
    day = date(2026, 1, 6)
    gen = Partition.generation("gen-1")
    lake.write("ab_exposures", gen, pl.DataFrame({"user_hash": users, "arm": arms, "day": [day] * 1000}))
    lake.write("ab_events", gen, pl.DataFrame({"user_hash": users[::2], "day": [day] * 500, "messages": [3] * 500}))
    stubs = [dg.AssetSpec(k) for k in UPSTREAM + ["offline_eval"]]
    result = dg.materialize(
        [*stubs, release.ab_readout, release.generation_record],
        selection=[release.ab_readout, release.generation_record],
        resources=_resources(settings, source="lake"),
        raise_on_error=False,
    )
    srm = _checks(result)[("ab_readout", "sample_ratio")]
    assert not srm.passed and srm.severity == dg.AssetCheckSeverity.ERROR
    assert _materialized(result) == {"ab_readout"}
    lifts = lake.read("ab_lifts", gen)
    assert lifts["verdict"].to_list() == ["invalid", "invalid"] and not lifts["simulated"].any()
    arms_table = lake.read("ab_arms", gen)
    assert arms_table["users"].to_list() == [600, 400] and arms_table["model"].to_list() == ["gen-0", "gen-1"]


def test_next_plan_builds_on_the_newest_generation_the_ab_test_did_not_reject(tmp_path):
    from datetime import date

    import polars as pl

    from assets.generation import GenerationSettings, next_plan
    from assets.resources import FlywheelSettings
    from pipeline.lake import Lake, Partition

    settings = FlywheelSettings(home=str(tmp_path / "home"))
    lake = Lake(tmp_path / "home")
    lake.write("prompts", date(2026, 1, 5), pl.DataFrame({"prompt_id": ["p"], "day": [date(2026, 1, 5)]}))
    for n, verdict in ((1, "ship (simulated)"), (2, "no-ship (simulated)")):
        lake.write(
            "generations",
            Partition.generation(f"gen-{n}"),
            pl.DataFrame({"generation": [f"gen-{n}"], "number": [n], "ab_verdict": [verdict]}),
        )
    plan = next_plan(settings, GenerationSettings(), "now")
    assert (plan.generation, plan.parent, plan.days) == ("gen-3", "gen-1", ["2026-01-05"])
