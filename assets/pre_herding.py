"""Pre-herding assets: engagement labels, and the two reward models with their validation report."""

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from assets.checks import result
from assets.curation import CurationSettings
from assets.generation import (
    BASE,
    GROUP_PRE,
    GenerationPlan,
    GenerationSettings,
    current_plan,
    read_window,
    reward_model_dir,
    write_generation_table,
)
from assets.metadata import png_markdown, preview_table, schema_metadata
from assets.resources import FlywheelSettings
from pipeline.embed import embed_texts
from pipeline.embed_config import EmbedConfig
from pipeline.embedding_cache import EmbeddingCache
from pipeline.lake import Lake, Partition, replace_dir, staging_dir
from pipeline.sampling import SamplingConfig, assign_split
from quality.outcomes import WARNING, CheckOutcome
from training.cards import write_model_card
from training.policy.dataset_lineage import frame_hash
from training.rewards.annotations import read_annotation_source
from training.rewards.engagement import USER_DAY_ENGAGEMENT, check_labels, user_day_engagement
from training.rewards.reward_embedding import EmbeddingHeadConfig, EmbeddingRewardModel
from training.rewards.reward_eval import (
    EVAL_METRICS,
    RewardEvalConfig,
    evaluate_reward_model,
    split_by_day,
    split_pairs,
)
from training.rewards.reward_model import EngagementPairsConfig, engagement_pairs, load_reward_model


def embed_config(settings: FlywheelSettings, curation: CurationSettings | None = None) -> EmbedConfig:
    """The embedder of reward-model features: the curation's (int8 ONNX on a CPU, torch on a GPU by
    default). A subprocess (GRPO's reward) rebuilds the same one from the model's recorded backend."""
    config = (curation or CurationSettings()).embed_config(Path(settings.home))
    return EmbedConfig(
        model=config.model, backend=config.backend, device=config.device, model_dir=config.model_dir, progress=False
    )


def head_config(settings: FlywheelSettings, curation: CurationSettings, kind: str) -> EmbeddingHeadConfig:
    # without style features: with them the head learns to pay for emoji and lists (the probe flags it)
    return EmbeddingHeadConfig(kind=kind, use_style=False, embedding_backend=embed_config(settings, curation).backend)


def cached_embed_fn(settings: FlywheelSettings, curation: CurationSettings | None = None):
    """The pipeline's embedder behind its text-hash cache: reward features are embedded once, ever."""
    config = embed_config(settings, curation)
    lake = settings.lake()
    cache = EmbeddingCache(lake.table_dir("embeddings"), config.model_id)
    return lambda texts: embed_texts(list(texts), config, cache)


def load_scorer(settings: FlywheelSettings, generation: str, kind: str, curation: CurationSettings | None = None):
    return load_reward_model(reward_model_dir(settings, generation, kind), embed_fn=cached_embed_fn(settings, curation))


def training_prompts(
    lake: Lake, plan: GenerationPlan, cap: int, seed: int = 0, sampling: SamplingConfig | None = None
) -> pl.DataFrame:
    """The window's unique prompts of training users only (held-out users never teach a reward model),
    with their topic, capped to `cap` rows by a seeded sample spread over the days."""
    prompts = read_window(lake, "unique_prompts", plan)
    if prompts.is_empty():
        raise ValueError(f"no unique_prompts for the days {plan.days}: materialize the consolidation job for them")
    topics = read_window(lake, "topic_assignments", plan)
    if topics.height:
        prompts = prompts.join(
            topics.select(pl.col("row_id").alias("prompt_id"), "cluster_id"), on="prompt_id", how="left"
        )
    split = assign_split(prompts["user_hash"], prompts["source"], sampling or SamplingConfig())
    prompts = prompts.filter(split == "train")
    if prompts.height > cap:
        prompts = prompts.sample(cap, seed=seed).sort("day", "prompt_id")
    return prompts


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


def _save(model, target: Path) -> Path:
    tmp = staging_dir(target)
    model.save(tmp)
    return replace_dir(tmp, target)


def _card(target: Path, kind: str, model, train: pl.DataFrame, metrics: pl.DataFrame) -> None:
    """The model card: the frozen embedder it reads, the content hash of its training rows, held-out metrics."""
    held_out = {
        f"held_out/{r['section']}/{r['metric']}": r["value"]
        for r in metrics.filter(pl.col("value").is_not_null()).iter_rows(named=True)
        if r["section"] in ("pointwise", "pairwise")
    }
    write_model_card(
        target,
        title=f"CharacterFlywheel {kind} reward model",
        base_model=model.metadata.get("embedding_model"),
        data_hashes={"train_rows": frame_hash(train.select(sorted(c for c in train.columns if c.endswith("_id"))))},
        metrics={k: v for k, v in model.metadata.items() if k != "config"} | held_out,
        library_name="pytorch",
        summary=f"A {kind} reward head on frozen sentence embeddings (`training.rewards.reward_embedding`).",
    )


def _eval_dir(settings: FlywheelSettings, plan: GenerationPlan, kind: str) -> Path:
    return Path(settings.home) / "reports" / "reward_models" / plan.generation / kind


def _write_metrics(lake: Lake, plan: GenerationPlan, kind: str, metrics: pl.DataFrame) -> None:
    lake.write(
        "reward_model_metrics",
        Partition.generation(plan.generation),
        metrics.with_columns(pl.lit(kind).alias("model"), pl.lit(plan.generation).alias("generation")),
        part=kind,
        replace=False,
    )


def _headline(metrics: pl.DataFrame, section: str, metric: str) -> dict:
    row = _metric(metrics, section, metric)
    if row is None or row["value"] is None:
        return {}
    return {
        f"held_out_{metric}": float(row["value"]),
        f"length_baseline_{metric}": float(row["length_baseline"]) if row["length_baseline"] is not None else 0.0,
    }


@dg.asset(
    deps=["engagement_labels"],
    group_name=GROUP_PRE,
    kinds={"pytorch"},
    description="Pointwise engagement reward model: p(continue) and expected reply length of a response in its "
    "context, trained on the window's served responses, validated on the last day (held out).",
    check_specs=[
        dg.AssetCheckSpec(
            "beats_length_baseline",
            asset="reward_model_pointwise",
            blocking=True,
            description="Held-out AUC above a length-only model's.",
        )
    ],
)
def reward_model_pointwise(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    generation: GenerationSettings,
    curation: CurationSettings,
):
    plan, lake = current_plan(settings), settings.lake()
    prompts = training_prompts(lake, plan, generation.reward_train_rows, sampling=curation.sampling_config())
    if prompts["day"].n_unique() > 1:
        train, held_out = split_by_day(prompts, eval_days=1)
    else:  # a one-day window: hold out a seeded fifth instead
        mask = pl.Series(np.random.default_rng(0).random(prompts.height) < 0.2)
        train, held_out = prompts.filter(~mask), prompts.filter(mask)
    model = EmbeddingRewardModel.fit_pointwise(
        train, head_config(settings, curation, "pointwise"), embed_fn=cached_embed_fn(settings, curation)
    )
    target = _save(model, reward_model_dir(settings, plan.generation, "pointwise"))
    metrics = evaluate_reward_model(
        model,
        eval_prompts=held_out,
        train_prompts=train,
        out_dir=_eval_dir(settings, plan, "pointwise"),
        config=RewardEvalConfig(),
    )
    _write_metrics(lake, plan, "pointwise", metrics)
    _card(target, "pointwise", model, train, metrics)
    yield dg.MaterializeResult(
        metadata={
            "generation": plan.generation,
            "train_rows": int(model.metadata.get("n_train", train.height)),
            "held_out_rows": held_out.height,
            "positive_rate": float(model.metadata.get("positive_rate", 0.0)),
            **_headline(metrics, "pointwise", "auc"),
            "path": dg.MetadataValue.path(str(target)),
            "model_card": dg.MetadataValue.path(str(target / "README.md")),
        }
    )
    yield result(
        "reward_model_pointwise",
        "beats_length_baseline",
        beats_length(metrics, "pointwise", "auc", "beats_length_baseline"),
    )


@dg.asset(
    deps=["engagement_labels"],
    group_name=GROUP_PRE,
    kinds={"pytorch"},
    description="Pairwise Bradley-Terry preference model, trained on engagement-derived pairs (responses to "
    "near-identical prompts with clearly different engagement) and human annotation pairs; validated on "
    "held-out pairs.",
    check_specs=[
        dg.AssetCheckSpec(
            "beats_length_baseline",
            asset="reward_model_pairwise",
            blocking=True,
            description="Held-out pair accuracy above 'the longer reply wins'.",
        )
    ],
)
def reward_model_pairwise(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    generation: GenerationSettings,
    curation: CurationSettings,
):
    plan, lake = current_plan(settings), settings.lake()
    # topics are fitted per day, so a cluster id means nothing across days: pair over the whole window
    prompts = training_prompts(lake, plan, generation.pair_mining_rows, sampling=curation.sampling_config()).drop(
        "cluster_id", strict=False
    )
    pairs = engagement_pairs(prompts, EngagementPairsConfig())
    sources = {"engagement": pairs.height}
    annotations = None
    if generation.annotations_path:
        annotations = read_annotation_source(generation.annotations_path)
        sources["annotation"] = annotations.pairs.height
        pairs = pl.concat([pairs, annotations.pairs], how="diagonal_relaxed")
    if pairs.height < 10:
        raise ValueError(
            f"only {pairs.height} preference pairs in the window {plan.days}: widen `window_days` or add "
            "annotation pairs (`annotations_path`)"
        )
    config, embed_fn = RewardEvalConfig(), cached_embed_fn(settings, curation)

    def fit(rows: pl.DataFrame) -> EmbeddingRewardModel:
        return EmbeddingRewardModel.fit_pairwise(rows, head_config(settings, curation, "pairwise"), embed_fn=embed_fn)

    train, held_out = split_pairs(pairs, eval_fraction=0.2)
    # a few held-out pairs cannot tell a model from the length baseline: then every pair is judged by
    # cross-validation and the saved model learns from all of them
    cross_validate = held_out.height < config.min_eval_pairs
    if cross_validate:
        train = held_out = pairs
    model = fit(train)
    target = _save(model, reward_model_dir(settings, plan.generation, "pairwise"))
    metrics = evaluate_reward_model(
        model,
        eval_pairs=held_out,
        out_dir=_eval_dir(settings, plan, "pairwise"),
        config=config,
        cross_validate=fit if cross_validate else None,
    )
    _write_metrics(lake, plan, "pairwise", metrics)
    _card(target, "pairwise", model, train, metrics)
    meta = {
        "generation": plan.generation,
        "pairs_by_source": dg.MetadataValue.json(sources),
        "train_pairs": train.height,
        "held_out_pairs": held_out.height,
        "validation": f"{config.cv_folds}-fold cross-validation (fewer than {config.min_eval_pairs} held-out pairs)"
        if cross_validate
        else "held-out 20% of prompts",
        "train_pair_accuracy": float(model.metadata.get("train_pair_accuracy", 0.0)),
        **_headline(metrics, "pairwise", "pair_accuracy"),
        "path": dg.MetadataValue.path(str(target)),
        "model_card": dg.MetadataValue.path(str(target / "README.md")),
    }
    if annotations is not None:
        meta["annotation_quarantine"] = annotations.quarantine.height
    outcome = beats_length(metrics, "pairwise", "pair_accuracy", "beats_length_baseline")
    if not outcome.passed:
        outcome, judge = _keep_parent_judge(settings, plan, target, outcome)
        meta["judge_from"] = judge
    yield dg.MaterializeResult(metadata=meta)
    yield result("reward_model_pairwise", "beats_length_baseline", outcome)


def _keep_parent_judge(
    settings: FlywheelSettings, plan: GenerationPlan, target: Path, failed: CheckOutcome
) -> tuple[CheckOutcome, str]:
    """A pairwise model that does not beat the length baseline never judges: the generation keeps its parent's
    (validated when it was trained, or the check would have stopped that generation), and the check warns.
    Without a parent model (the first generation) the check fails and blocks."""
    parent = reward_model_dir(settings, plan.parent, "pairwise") if plan.parent != BASE else None
    if parent is None or not parent.is_dir():
        return failed, plan.generation
    tmp = staging_dir(target)
    shutil.copytree(parent, tmp, dirs_exist_ok=True)
    replace_dir(tmp, target)
    detail = f"{failed.detail}; this generation judges with {plan.parent}'s pairwise model instead"
    return CheckOutcome(failed.name, False, detail, metadata=failed.metadata, severity=WARNING), plan.parent


def _metric(frame: pl.DataFrame, section: str, metric: str) -> dict | None:
    rows = frame.filter((pl.col("section") == section) & (pl.col("metric") == metric))
    return rows.row(0, named=True) if rows.height else None


def beats_length(frame: pl.DataFrame, section: str, metric: str, name: str) -> CheckOutcome:
    row = _metric(frame, section, metric)
    if row is None or row["value"] is None or row["length_baseline"] is None:
        return CheckOutcome(name, False, f"no held-out {metric} to compare with the length-only baseline")
    passed = row["value"] > row["length_baseline"]
    return CheckOutcome(
        name,
        bool(passed),
        f"held-out {metric} {row['value']:.3f} vs length-only {row['length_baseline']:.3f} "
        f"(random {row['random_baseline'] if row['random_baseline'] is not None else float('nan'):.3f}, n={row['n']}"
        + (f", {row['detail']})" if row.get("detail") else ")"),
        metadata={
            "value": row["value"],
            "length_baseline": row["length_baseline"],
            "random_baseline": row["random_baseline"],
            "n": row["n"],
        },
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
