"""Pre-herding assets: the traffic's profile (what it offers each judge), engagement labels, the two reward models
(`assets.reward_models`) and their validation report."""

from pathlib import Path

import dagster as dg
import polars as pl

from assets.checks import result
from assets.curation import CurationSettings
from assets.generation import GROUP_PRE, GenerationSettings, current_plan, write_generation_table
from assets.metadata import png_markdown, preview_table, schema_metadata
from assets.release import held_out_slices
from assets.resources import AbSettings, FlywheelSettings, ReleaseSettings
from assets.reward_models import preference_pairs, reward_model_pairwise, reward_model_pointwise
from evaluation import traffic_profile as profiles
from evaluation.user_simulator import UserSimulatorConfig, turns_from_prompts
from pipeline.lake import Partition
from quality.outcomes import WARNING, CheckOutcome
from training.generation_plan import capped_sample, judge_rows, read_window
from training.rewards.engagement import USER_DAY_ENGAGEMENT, check_labels, user_day_engagement
from training.rewards.reward_eval import EVAL_METRICS, RewardEvalConfig


@dg.asset(
    deps=["generation_plan"],
    group_name=GROUP_PRE,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(profiles.PROFILE, generation=pl.Utf8),
    description="What the generation's traffic offers each judge, before anything is trained: preference pairs "
    "(pairwise judge), replies the user went on or stopped after (pointwise judge), the user simulator's turns and "
    "users (A/B readout), held-out users per slice (win-rate gates), thumbs and topic sizes; each against its "
    "minimum, with what follows below it and the fix.",
    check_specs=[
        dg.AssetCheckSpec(
            "judges_have_data",
            asset="traffic_profile",
            blocking=True,
            description="At least one reward model can be trained (else nothing ranks the candidates the policy "
            "learns from, and the generation stops here); a judge below its minimum warns as insufficient evidence.",
        )
    ],
)
def traffic_profile(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    generation: GenerationSettings,
    curation: CurationSettings,
    release: ReleaseSettings,
    ab: AbSettings,
):
    plan, lake = current_plan(settings), settings.lake()
    judge = generation.judge_data_config(release.min_slice_users)
    rows = judge_rows(lake, plan, curation.sampling_config(), generation.judge_data_config())
    pairs, held_out, _, _ = preference_pairs(rows, generation)
    pool = read_window(lake, "prompts", plan)
    slice_users = {}
    if pool.height:
        users = held_out_slices(lake, plan, pool, curation.sampling_config(), judge).users_per_slice()
        slice_users = {s: v["window"] + v["pooled"] for s, v in users.items()}
    counts = profiles.TrafficCounts(
        pairs=pairs.height,
        held_out_pairs=held_out.height,
        pointwise_labels=capped_sample(rows.train, generation.reward_train_rows, generation.seed)["continued"],
        simulator_turns=turns_from_prompts(rows.train),
        slice_users=slice_users,
        pool=pool,
    )
    simulator = UserSimulatorConfig(min_rows=ab.simulator_min_rows, min_users=ab.min_simulator_users)
    profile = profiles.traffic_profile(
        counts, generation.judge_minimums(), simulator, release.min_slice_users, RewardEvalConfig().min_eval_pairs
    )
    write_generation_table(lake, "traffic_profile", plan, profile)
    line = profiles.summary(profile)
    context.log.info(f"traffic profile of {plan.generation} ({plan.days[0]} .. {plan.days[-1]}): {line}")
    yield dg.MaterializeResult(
        metadata={
            "generation": plan.generation,
            "summary": line,
            "profile": preview_table(profile, max_rows=40),
            "lacking": dg.MetadataValue.json(profiles.lacking(profile)),
            "training_data": dg.MetadataValue.json(rows.counters),
        }
    )
    untrainable = profiles.reward_models_lacking_data(profile)
    if len(untrainable) == len(profiles.REWARD_MODELS):
        outcome = CheckOutcome(
            "judges_have_data",
            False,
            f"no reward model can be trained on this traffic, so nothing would rank the replies the policy learns "
            f"from: {line}. The generation stops before building any policy",
        )
    else:
        outcome = CheckOutcome(
            "judges_have_data",
            not profiles.lacking(profile),
            line + ("; the generation goes on with the judges that have their data" if untrainable else ""),
            severity=WARNING,
        )
    yield result("traffic_profile", "judges_have_data", outcome)


@dg.asset(
    deps=["generation_plan"],
    group_name=GROUP_PRE,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(USER_DAY_ENGAGEMENT),
    description="Engagement per user and day over the generation's window: engaged (breadth) and messages "
    "sent (depth); served-turn labels validated against the prompts.",
)
def engagement_labels(context: dg.AssetExecutionContext, settings: FlywheelSettings):
    plan, lake = current_plan(settings), settings.lake()
    per_user = user_day_engagement(read_window(lake, "conversations", plan))
    write_generation_table(lake, "engagement_labels", plan, per_user)
    _, bad = check_labels(read_window(lake, "unique_prompts", plan))
    per_day = (
        per_user.group_by("day")
        .agg(
            pl.len().alias("users"),
            pl.col("engaged").mean().round(4).alias("breadth"),
            pl.col("messages_sent").filter(pl.col("engaged")).mean().round(2).alias("depth"),
        )
        .sort("day")
    )
    return dg.MaterializeResult(
        metadata={
            "generation": plan.generation,
            "dagster/row_count": per_user.height,
            "breadth": float(per_user["engaged"].mean() or 0.0),
            "depth": float(per_user.filter(pl.col("engaged"))["messages_sent"].mean() or 0.0),
            "label_violations": bad.height,
            "per_day": preview_table(per_day, max_rows=30),
        }
    )


@dg.asset(
    deps=["reward_model_pointwise", "reward_model_pairwise"],
    group_name=GROUP_PRE,
    kinds={"polars"},
    metadata=schema_metadata(EVAL_METRICS, model=pl.Utf8, generation=pl.Utf8),
    description="Validation report of both reward models: AUC, accuracy, calibration (ECE and reliability plot), "
    "pair accuracy against length-only and random baselines, and the artifact-sensitivity probe.",
    check_specs=[
        dg.AssetCheckSpec(
            "no_artifact_reward",
            asset="reward_model_report",
            blocking=False,
            description="Neither model pays for emoji, exclamation marks, lists or padding.",
        )
    ],
)
def reward_model_report(context: dg.AssetExecutionContext, settings: FlywheelSettings):
    plan, lake = current_plan(settings), settings.lake()
    metrics = lake.read("reward_model_metrics", Partition.generation(plan.generation))
    reports = Path(settings.home) / "reports" / "reward_models" / plan.generation
    plots = sorted(reports.rglob("*.png"))
    meta = {
        "generation": plan.generation,
        "report": dg.MetadataValue.path(str(reports.resolve())),
        "metrics": preview_table(
            metrics.select(
                "model",
                "section",
                "metric",
                pl.col("value").round(4),
                pl.col("length_baseline").round(4),
                pl.col("random_baseline").round(4),
                "n",
                "flag",
            ),
            max_rows=80,
        ),
    }
    if plots:
        meta["reliability"] = png_markdown(plots[0], "reliability")
        meta["plots"] = dg.MetadataValue.json([str(p) for p in plots])
    yield dg.MaterializeResult(metadata=meta)
    flagged = metrics.filter((pl.col("section") == "summary") & pl.col("flag"))
    yield result(
        "reward_model_report",
        "no_artifact_reward",
        CheckOutcome(
            "no_artifact_reward",
            flagged.is_empty(),
            "no artifact raises scores beyond tolerance"
            if flagged.is_empty()
            else "pays for artifacts: "
            + "; ".join(f"{m}: {d}" for m, d in flagged.select("model", "detail").iter_rows()),
            severity=WARNING,
        ),
    )


PRE_HERDING_ASSETS = [
    traffic_profile,
    engagement_labels,
    reward_model_pointwise,
    reward_model_pairwise,
    reward_model_report,
]
