"""The cross-day curation assets: exact and near dedup (`deduped_prompts`) and semantic dedup
(`unique_prompts`), with what they share with the embedding step (`assets.embedding_shards`). Each compares a day with the days before it, so each depends on its own previous
day's partition, and a backfill runs their days in order."""

from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from assets.checks import conservation_spec
from assets.curation_steps import (
    GROUP,
    CurationSettings,
    cross_day_memo,
    finish,
    partition_day,
    report_stale,
)
from assets.metadata import schema_metadata
from assets.partitions import PREVIOUS_DAY, daily
from assets.resources import FlywheelSettings
from assets.steps import one_writer, publish
from pipeline import schema
from pipeline.dedup_exact import ExactDedupConfig, exact_dedup
from pipeline.dedup_near import near_dedup
from pipeline.embedding_cache import EmbeddingCache
from pipeline.lake import Lake
from pipeline.prompts import tail_text
from pipeline.semdedup import history_kind, semantic_dedup
from pipeline.step import StepResult


@dg.asset(
    deps=["static_prompts", dg.AssetDep("deduped_prompts", partition_mapping=PREVIOUS_DAY)],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(schema.PROMPTS),
    code_version="dedup-2",
    description="Static prompts without exact duplicates (normalized text, against every earlier day too) and "
    "MinHash near duplicates (one kept representative per group). Depends on its own previous day: the "
    "days of a backfill run in order.",
    check_specs=[conservation_spec("deduped_prompts")],
)
@one_writer
def deduped_prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = partition_day(context), settings.lake()
    exact_config, near_config = ExactDedupConfig(), curation.near_config()
    exact_history = curation.history(settings, "exact_dedup", exact_config.history_kind())
    near_history = curation.history(settings, "near_dedup", near_config.history_kind())
    memo, replayed = cross_day_memo(
        context,
        settings,
        curation,
        lake,
        "deduped_prompts",
        ["static_prompts"],
        (exact_config, near_config),
        [exact_history, near_history],
    )
    if replayed is not None:
        yield from replayed
        return
    prompts = lake.read("static_prompts", day)
    exact = exact_dedup(prompts, exact_config, history=exact_history, day=day)
    near = near_dedup(exact.kept, near_config, history=near_history, day=day)
    published = publish(
        lake,
        day,
        "deduped_prompts",
        {"exact_dedup": exact, "near_dedup": near},
        contract=schema.DEDUPED_PROMPTS,
        rows_in=prompts,
        metadata=report_stale(context, [exact_history, near_history]),
    )
    yield from finish(memo, published)


# ---- embeddings -------------------------------------------------------------------------------


def embedded_texts(prompts: pl.DataFrame, curation: CurationSettings) -> pl.Series:
    """The text of each prompt that is embedded: its last `embed_turns` turns."""
    return tail_text(prompts, curation.embed_turns)


def day_vectors(
    lake: Lake, day: date, curation: CurationSettings, settings: FlywheelSettings
) -> tuple[pl.DataFrame, np.ndarray]:
    """The day's prompt ids with their vectors, read back from the cache (nothing is re-embedded)."""
    index = lake.read("prompt_embeddings", day)
    config = curation.embed_config(Path(settings.home))
    model_ids = index["model_id"].unique().to_list()
    if model_ids and model_ids != [config.model_id]:
        raise ValueError(
            f"prompt_embeddings of {day} were made with {model_ids}, the configured model is {config.model_id}: "
            "re-materialize prompt_embeddings for this day"
        )
    cache = EmbeddingCache(lake.table_dir("embeddings"), config.model_id)
    found = cache.lookup(index["text_hash"].to_list())
    joined = index.join(found, on="text_hash", how="left")
    if joined["vector"].null_count():
        raise ValueError(
            f"{joined['vector'].null_count()} vectors of {day} are missing from the cache: "
            "re-materialize prompt_embeddings for this day"
        )
    vectors = np.asarray(joined["vector"].to_list(), dtype=np.float32).reshape(joined.height, -1)
    return joined.drop("vector"), vectors


# ---- semantic dedup ---------------------------------------------------------------------------


@dg.asset(
    deps=["prompt_embeddings", dg.AssetDep("unique_prompts", partition_mapping=PREVIOUS_DAY)],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"faiss", "parquet"},
    metadata=schema_metadata(schema.PROMPTS),
    code_version="semdedup-3",
    description="Prompts without semantic duplicates (SemDeDup: k-means, then cosine >= 1 - eps within a "
    "cluster), also against the vectors kept on earlier days. Depends on its own previous day: the days of "
    "a backfill run in order.",
    check_specs=[conservation_spec("unique_prompts")],
)
@one_writer
def unique_prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = partition_day(context), settings.lake()
    config = curation.semantic_config()
    model_id = curation.embed_config(Path(settings.home)).model_id
    history = curation.history(settings, "semantic_dedup", history_kind(model_id))
    memo, replayed = cross_day_memo(
        context, settings, curation, lake, "unique_prompts", ["deduped_prompts", "prompt_embeddings"], config, [history]
    )
    if replayed is not None:
        yield from replayed
        return
    prompts = lake.read("deduped_prompts", day)
    index, vectors = day_vectors(lake, day, curation, settings)
    order = index["prompt_id"].to_list()
    if order != prompts["prompt_id"].to_list():
        prompts = prompts.join(index.select("prompt_id").with_row_index("_i"), on="prompt_id").sort("_i").drop("_i")
    res = semantic_dedup(prompts["prompt_id"], vectors, config, day=day, texts=prompts["text"], history=history)
    kept = prompts.join(res.kept.select(pl.col("row_id").alias("prompt_id")), on="prompt_id", how="semi")
    published = publish(
        lake,
        day,
        "unique_prompts",
        {"semantic_dedup": StepResult(kept, res.drops, res.counters)},
        contract=schema.DEDUPED_PROMPTS,
        rows_in=prompts,
        metadata={"eps": config.eps, "keep": config.keep, **report_stale(context, [history])},
    )
    yield from finish(memo, published)


# ---- topics -----------------------------------------------------------------------------------
