"""Pre-herding assets: engagement labels, the two reward models (`assets.reward_models`) and their validation
report."""

from pathlib import Path

import dagster as dg
import polars as pl

from assets.checks import result
from assets.generation import GROUP_PRE, current_plan, write_generation_table
from assets.metadata import png_markdown, preview_table, schema_metadata
from assets.resources import FlywheelSettings
from assets.reward_models import reward_model_pairwise, reward_model_pointwise
from pipeline.lake import Partition
from quality.outcomes import WARNING, CheckOutcome
from training.generation_plan import read_window
from training.rewards.engagement import USER_DAY_ENGAGEMENT, check_labels, user_day_engagement
from training.rewards.reward_eval import EVAL_METRICS


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


PRE_HERDING_ASSETS = [engagement_labels, reward_model_pointwise, reward_model_pairwise, reward_model_report]
