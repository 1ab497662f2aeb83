"""The reward models of a generation: a pointwise engagement model and a pairwise preference model, each
validated on held-out data against a length-only baseline, and the embedder both read their replies with."""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from assets.checks import result
from assets.curation import CurationSettings
from assets.generation import GROUP_PRE, GenerationPlan, GenerationSettings, current_plan, reward_model_dir
from assets.metadata import preview_table
from assets.resources import FlywheelSettings
from pipeline.digest import frame_digest
from pipeline.embed import EmbedConfig, EmbeddingCache, embed_texts
from pipeline.lake import Lake, Partition, replace_dir, staging_dir
from quality.outcomes import WARNING, CheckOutcome
from training.cards import write_model_card
from training.generation_plan import capped_sample, judge_rows
from training.rewards.annotations import read_annotation_source
from training.rewards.engagement_label import TARGET, choose_label, with_target
from training.rewards.judge_minimums import (
    Shortfall,
    not_trained,
    not_trained_row,
    pairwise_shortfall,
    pointwise_shortfall,
    write_not_trained,
)
from training.rewards.reward_embedding import EmbeddingHeadConfig, EmbeddingRewardModel
from training.rewards.reward_eval import EVAL_METRICS, RewardEvalConfig, evaluate_reward_model
from training.rewards.reward_model import EngagementPairsConfig, engagement_pairs, load_reward_model
from training.rewards.reward_splits import split_by_day, split_pairs


def embed_config(settings: FlywheelSettings, curation: CurationSettings | None = None) -> EmbedConfig:
    """The embedder of reward-model features: the curation's (int8 ONNX with scales per text on a CPU,
    torch on a GPU by default). A subprocess (GRPO's reward) rebuilds the same one from the model's
    recorded backend."""
    config = (curation or CurationSettings()).embed_config(Path(settings.home))
    return EmbedConfig(
        model=config.model, backend=config.backend, device=config.device, model_dir=config.model_dir, progress=False
    )


def head_config(
    settings: FlywheelSettings, curation: CurationSettings, kind: str, seed: int = 0
) -> EmbeddingHeadConfig:
    # without style features: with them the head learns to pay for emoji and lists (the probe flags it)
    backend = embed_config(settings, curation).backend
    return EmbeddingHeadConfig(kind=kind, use_style=False, embedding_backend=backend, seed=seed)


def cached_embed_fn(settings: FlywheelSettings, curation: CurationSettings | None = None):
    """The pipeline's embedder behind its text-hash cache: reward features are embedded once, ever."""
    config = embed_config(settings, curation)
    lake = settings.lake()
    cache = EmbeddingCache(lake.table_dir("embeddings"), config.model_id)
    return lambda texts: embed_texts(list(texts), config, cache)


def load_scorer(settings: FlywheelSettings, generation: str, kind: str, curation: CurationSettings | None = None):
    directory = reward_model_dir(settings, generation, kind)
    missing = not_trained(directory)
    if missing is not None:
        raise ValueError(f"{generation}'s {kind} reward model was {missing['reason']}: {missing['fix']}")
    return load_reward_model(directory, embed_fn=cached_embed_fn(settings, curation))


def load_judges(settings: FlywheelSettings, generation: str, curation: CurationSettings | None = None) -> tuple:
    """(pointwise, pairwise) scorers of a generation; a judge the traffic had too little data to train is None."""
    return tuple(
        None
        if not_trained(reward_model_dir(settings, generation, kind)) is not None
        else load_scorer(settings, generation, kind, curation)
        for kind in ("pointwise", "pairwise")
    )


def training_reward(settings: FlywheelSettings, generation: str) -> str:
    """The judge whose scores rank candidates and reward GRPO: the pointwise engagement model, or, when the
    traffic had too little to train it, the pairwise model's Bradley-Terry utility (a score of a reply in its
    context as well). Refused when neither was trained: nothing would say which replies are better."""
    reasons = {}
    for kind in ("pointwise", "pairwise"):
        missing = not_trained(reward_model_dir(settings, generation, kind))
        if missing is None:
            return kind
        reasons[kind] = missing["reason"]
    raise ValueError(
        f"{generation} has no reward model to train the policy with: "
        + "; ".join(f"{k} {r}" for k, r in reasons.items())
        + " (the `traffic_profile` asset says what the traffic offers each judge)"
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
        if r["section"] in ("pointwise", "pairwise", "label")
    }
    write_model_card(
        target,
        title=f"CharacterFlywheel {kind} reward model",
        base_model=model.metadata.get("embedding_model"),
        data_hashes={"train_rows": frame_digest(train.select(sorted(c for c in train.columns if c.endswith("_id"))))},
        metrics={k: v for k, v in model.metadata.items() if k != "config"} | held_out,
        library_name="pytorch",
        summary=f"A {kind} reward head on frozen sentence embeddings (`training.rewards.reward_embedding`), "
        "trained on the training users of every curated day up to its generation's window (`training_data`) and "
        f"validated on {model.metadata.get('validation', 'held-out data')}."
        + (
            f" It learns the engagement label `{model.metadata['label_choice']['label']}`, chosen among continued, "
            "reply length and depth after the turn by its discrimination within turn-position strata on the "
            "validation rows (`held_out/label/...`; the chosen label's metrics are measured on the same rows)."
            if "label_choice" in model.metadata
            else ""
        ),
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


MIN_VALIDATION_ROWS = 20


def record_not_trained(
    settings: FlywheelSettings, plan: GenerationPlan, shortfall: Shortfall, training_data: dict, **extra
) -> dg.MaterializeResult:
    """A judge below its minimum: its folder records the shortfall instead of weights, `reward_model_metrics` a
    `training` row (which `evaluation.evidence.judge_evidence` reads as insufficient), and the asset's metadata
    the count, the minimum and the fix."""
    target = reward_model_dir(settings, plan.generation, shortfall.judge)
    tmp = staging_dir(target)
    write_not_trained(tmp, shortfall)
    replace_dir(tmp, target)
    _write_metrics(
        settings.lake(), plan, shortfall.judge, pl.DataFrame([not_trained_row(shortfall)], schema=EVAL_METRICS)
    )
    return dg.MaterializeResult(
        metadata={
            "generation": plan.generation,
            "trained": False,
            "reason": shortfall.reason,
            "count": shortfall.count,
            "minimum": shortfall.minimum,
            "unit": shortfall.unit,
            "fix": shortfall.fix,
            "training_data": dg.MetadataValue.json(training_data),
            "path": dg.MetadataValue.path(str(target)),
            **extra,
        }
    )


def not_trained_check(asset: str, shortfall: Shortfall, plan: GenerationPlan) -> dg.AssetCheckResult:
    """A judge without its data is insufficient evidence: the check warns and blocks nothing."""
    outcome = CheckOutcome(
        "beats_length_baseline",
        False,
        f"insufficient evidence: {plan.generation}'s {shortfall.judge} model was {shortfall.reason}; it does not "
        f"count as a judge. To train it: {shortfall.fix}",
        metadata={"count": shortfall.count, "minimum": shortfall.minimum},
        severity=WARNING,
    )
    return result(asset, "beats_length_baseline", outcome)


def label_rows(measurements: pl.DataFrame) -> pl.DataFrame:
    """The engagement-label measurements as `EVAL_METRICS` rows (section `label`): each candidate's AUC within
    turn-position strata next to a length-only scorer's, flagged when it does not beat it."""
    return measurements.select(
        pl.lit("label").alias("section"),
        pl.format("stratified_auc[{}]", "label").alias("metric"),
        pl.col("stratified_auc").alias("value"),
        pl.col("length_stratified_auc").alias("length_baseline"),
        pl.lit(0.5).alias("random_baseline"),
        pl.col("rows_in_strata").alias("n"),
        (pl.col("stratified_auc") <= pl.col("length_stratified_auc")).alias("flag"),
        pl.col("detail"),
    ).cast(dict(EVAL_METRICS))


def _headline(metrics: pl.DataFrame, section: str, metric: str) -> dict:
    row = _metric(metrics, section, metric)
    if row is None or row["value"] is None:
        return {}
    return {
        f"held_out_{metric}": float(row["value"]),
        f"length_baseline_{metric}": float(row["length_baseline"]) if row["length_baseline"] is not None else 0.0,
    }


@dg.asset(
    deps=["engagement_labels", "traffic_profile"],
    group_name=GROUP_PRE,
    kinds={"pytorch"},
    description="Pointwise engagement reward model: p(engaged) and expected reply length of a response in its "
    "context, trained on the training users' served responses of every curated day up to the window, validated "
    "on the window's held-out users; the engagement label (continued, reply length or depth after the turn) is "
    "the one that discriminates best within turn-position strata.",
    check_specs=[
        dg.AssetCheckSpec(
            "beats_length_baseline",
            asset="reward_model_pointwise",
            blocking=True,
            description="Held-out AUC above a length-only model's (it is the training reward); a model the traffic "
            "had too little data to train warns as insufficient evidence instead.",
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
    seed = generation.seed
    rows = judge_rows(lake, plan, curation.sampling_config(), generation.judge_data_config())
    train, held_out = capped_sample(rows.train, generation.reward_train_rows, seed), rows.validation
    shortfall = pointwise_shortfall(train["continued"], generation.judge_minimums())
    if shortfall is not None:
        context.log.warning(f"pointwise reward model {shortfall.reason}: {shortfall.fix}")
        yield record_not_trained(settings, plan, shortfall, rows.counters)
        yield not_trained_check("reward_model_pointwise", shortfall, plan)
        return
    validation = "the window's held-out users"
    if held_out.height < MIN_VALIDATION_ROWS or held_out["continued"].drop_nulls().n_unique() < 2:
        # too few held-out users in the window to measure on: the training users' latest day (or a seeded
        # fifth of their rows) validates instead, and the metadata says so
        validation = f"the training users' {'latest day' if train['day'].n_unique() > 1 else 'seeded fifth'}"
        if train["day"].n_unique() > 1:
            train, held_out = split_by_day(train, eval_days=1)
        else:
            mask = pl.Series(np.random.default_rng(seed).random(train.height) < 0.2)
            train, held_out = train.filter(~mask), train.filter(mask)
    embed_fn = cached_embed_fn(settings, curation)

    def fit(frame: pl.DataFrame) -> EmbeddingRewardModel:
        return EmbeddingRewardModel.fit_pointwise(
            frame, head_config(settings, curation, "pointwise", seed), embed_fn=embed_fn, label=TARGET
        )

    choice = choose_label(train, held_out, fit)
    model = choice.model
    model.metadata |= {"label_choice": choice.summary(), "training_data": rows.counters, "validation": validation}
    target = _save(model, reward_model_dir(settings, plan.generation, "pointwise"))
    train, held_out = (with_target(f, choice.label, choice.threshold) for f in (train, held_out))
    metrics = evaluate_reward_model(
        model,
        eval_prompts=held_out,
        train_prompts=train,
        out_dir=_eval_dir(settings, plan, "pointwise"),
        config=RewardEvalConfig(seed=seed),
        label=TARGET,
    )
    metrics = pl.concat([metrics, label_rows(choice.measurements)])
    _write_metrics(lake, plan, "pointwise", metrics)
    _card(target, "pointwise", model, train, metrics)
    yield dg.MaterializeResult(
        metadata={
            "generation": plan.generation,
            "label": choice.label,
            "label_choice": preview_table(choice.measurements.with_columns(pl.col(pl.Float64).round(4))),
            "train_rows": int(model.metadata.get("n_train", train.height)),
            "training_data": dg.MetadataValue.json(rows.counters),
            "validation": validation,
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
    # after the pointwise model: when that one could not be trained, this one is the training reward
    deps=["engagement_labels", "traffic_profile", "reward_model_pointwise"],
    group_name=GROUP_PRE,
    kinds={"pytorch"},
    description="Pairwise Bradley-Terry preference model, trained on engagement-derived pairs (responses to "
    "near-identical prompts with clearly different engagement) of the training users of every curated day up to "
    "the window, and human annotation pairs; validated on the window's held-out users' pairs.",
    check_specs=[
        dg.AssetCheckSpec(
            "beats_length_baseline",
            asset="reward_model_pairwise",
            blocking=False,
            description="Held-out pair accuracy above 'the longer reply wins'; when not, it warns and the model "
            "does not count as a judge (insufficient evidence).",
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
    seed = generation.seed
    rows = judge_rows(lake, plan, curation.sampling_config(), generation.judge_data_config())
    pairs, held_out, sources, annotations = preference_pairs(rows, generation)
    shortfall = pairwise_shortfall(pairs.height, generation.judge_minimums())
    if shortfall is not None:
        context.log.warning(f"pairwise reward model {shortfall.reason} in the days up to {plan.days[-1]}")
        training_reward(settings, plan.generation)  # refuses when the pointwise model was not trained either
        yield record_not_trained(
            settings, plan, shortfall, rows.counters, pairs_by_source=dg.MetadataValue.json(sources)
        )
        yield not_trained_check("reward_model_pairwise", shortfall, plan)
        return
    config, embed_fn = RewardEvalConfig(seed=seed), cached_embed_fn(settings, curation)

    def fit(rows: pl.DataFrame) -> EmbeddingRewardModel:
        head = head_config(settings, curation, "pairwise", seed)
        return EmbeddingRewardModel.fit_pairwise(rows, head, embed_fn=embed_fn)

    train = pairs
    # a few held-out pairs cannot tell a model from the length baseline: then the training pairs are judged by
    # cross-validation (held-out users' pairs never train), and the saved model learns from all of them
    cross_validate = held_out.height < config.min_eval_pairs
    if cross_validate:
        held_out = train
    model = fit(train)
    validation = (
        f"{config.cv_folds}-fold cross-validation of the training pairs (fewer than {config.min_eval_pairs} "
        "held-out pairs)"
        if cross_validate
        else "pairs of the window's held-out users" + (" and 20% of the annotation prompts" if annotations else "")
    )
    model.metadata |= {"training_data": rows.counters, "validation": validation}
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
        # what the annotation file held, quarantined records and ties included
        **({"annotations": dg.MetadataValue.json(annotations.counts())} if annotations is not None else {}),
        "train_pairs": train.height,
        "held_out_pairs": held_out.height,
        "validation": validation,
        "training_data": dg.MetadataValue.json(rows.counters),
        "train_pair_accuracy": float(model.metadata.get("train_pair_accuracy", 0.0)),
        **_headline(metrics, "pairwise", "pair_accuracy"),
        "path": dg.MetadataValue.path(str(target)),
        "model_card": dg.MetadataValue.path(str(target / "README.md")),
    }
    if annotations is not None:
        meta["annotation_quarantine"] = annotations.quarantine.height
    outcome = beats_length(metrics, "pairwise", "pair_accuracy", "beats_length_baseline")
    if not outcome.passed and training_reward(settings, plan.generation) == "pairwise":
        raise ValueError(
            f"{plan.generation} has no reward model to train the policy with: the pointwise model was not trained "
            f"and the pairwise model does not beat the length-only baseline ({outcome.detail})"
        )
    if not outcome.passed:
        outcome = not_a_judge(outcome, plan)
    meta["counts_as_judge"] = outcome.passed
    yield dg.MaterializeResult(metadata=meta)
    yield result("reward_model_pairwise", "beats_length_baseline", outcome)


def preference_pairs(rows, generation: GenerationSettings) -> tuple[pl.DataFrame, pl.DataFrame, dict, object]:
    """(training pairs, held-out pairs, pairs by source, the annotation source or None) of the pairwise judge:
    engagement pairs mined from the training users' prompts (`rows.train`, capped at `pair_mining_rows`) and from
    the window's held-out users', plus annotation pairs, of which a seeded fifth validates."""
    # topics are fitted per day, so a cluster id means nothing across days: pair over all the days
    prompts = capped_sample(rows.train, generation.pair_mining_rows, generation.seed).drop("cluster_id", strict=False)
    pairs = engagement_pairs(prompts, EngagementPairsConfig())
    held_out = engagement_pairs(rows.validation.drop("cluster_id", strict=False), EngagementPairsConfig())
    sources = {"engagement": pairs.height, "engagement_held_out_users": held_out.height}
    annotations = None
    if generation.annotations_path:
        annotations = read_annotation_source(generation.annotations_path)
        sources["annotation"] = annotations.pairs.height
        # annotations carry no user: a seeded fifth of their prompts validates
        annotated_train, annotated_held = split_pairs(annotations.pairs, eval_fraction=0.2)
        pairs = pl.concat([pairs, annotated_train], how="diagonal_relaxed")
        held_out = pl.concat([held_out, annotated_held], how="diagonal_relaxed")
    return pairs, held_out, sources, annotations


def not_a_judge(failed: CheckOutcome, plan: GenerationPlan) -> CheckOutcome:
    """A pairwise model that does not beat the length baseline is insufficient evidence, not a reason to stop:
    it trains nothing (the pointwise model is the training reward), and the release gates read its held-out
    validation from `reward_model_metrics` and do not count it (`evaluation.evidence.judge_evidence`). So the
    check warns, and the generation goes on to be decided by the gates that have evidence."""
    detail = (
        f"insufficient evidence: {failed.detail}; {plan.generation}'s pairwise model does not count as a judge "
        "in its release gates"
    )
    return CheckOutcome(failed.name, False, detail, metadata=failed.metadata, severity=WARNING)


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
