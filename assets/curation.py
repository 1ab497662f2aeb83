"""Curation assets: one day of `conversations` into a deduplicated, clustered, sampled prompt pool.

conversations -> scrubbed_conversations -> static_prompts -> deduped_prompts -> prompt_embeddings
-> unique_prompts -> topics -> prompts

Each asset reads its inputs from the lake, calls one library function, writes its partition and the
rows it dropped (table `drops`, one part per stage, so re-running a stage replaces only its own
drops), and attaches counts to its materialization. Cross-day state (hashes, MinHash signatures,
FAISS indexes of kept vectors) is stored per day, and a day only ever reads days before it, so
re-running a day gives the same result.
"""

from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.checks import conservation, conservation_spec, result, run_suite, suite_spec
from assets.metadata import counts_table, md_table, png_markdown, schema_metadata
from assets.partitions import daily
from assets.resources import FlywheelSettings
from pipeline import schema
from pipeline.dedup import ExactDedupConfig, NearDedupConfig, exact_dedup, near_dedup
from pipeline.embed import EmbedConfig, EmbeddingCache, embed_with_stats, text_hashes
from pipeline.lake import Lake
from pipeline.privacy import PrivacyConfig, scrub_frame
from pipeline.prompts import TURN_DROP_REASONS, PromptConfig, cut_prompts, summarize, tail_text
from pipeline.sampling import SamplingConfig, sample_pool
from pipeline.semdedup import SemanticIndex, SemDedupConfig, semantic_dedup
from pipeline.topics import TopicConfig, clusters_schema, fit_topics, plot_topic_map
from quality.contracts import check_split_disjoint, check_stage_conservation

GROUP = "curation"


class CurationSettings(dg.ConfigurableResource):
    """Knobs of the curation steps; defaults work offline on a laptop."""

    embed_model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="sentence-transformers model name or path (default: the packaged copy)",
    )
    embed_backend: str = Field(
        default="auto",
        description="auto (torch on a GPU, onnx-int8 on a CPU), onnx-int8 "
        "(fastest on CPU; cosine >= 0.99 to torch), onnx (fp32) or torch",
    )
    embed_device: str = Field(default="auto", description="auto (cuda when present), cpu, cuda")
    embed_turns: int = Field(default=3, description="last turns of a history that are embedded")
    near_threshold: float = Field(default=0.8, description="MinHash Jaccard threshold of near duplicates")
    semantic_eps: float = Field(default=0.05, description="cosine >= 1 - eps marks semantic duplicates")
    topics: int = Field(default=0, description="topic clusters per day; 0 = automatic (about sqrt(n / 2))")
    retain_fraction: float = Field(default=0.5, description="share of unique prompts kept in the pool")
    sampling_mode: str = Field(default="cluster_balanced", description="cluster_balanced or stratified")
    eval_fraction: float = Field(default=0.1, description="share of users held out for evaluation")

    def embed_config(self, home: Path) -> EmbedConfig:
        backend = self.embed_backend
        if backend == "auto":
            import torch

            backend = "torch" if torch.cuda.is_available() else "onnx-int8"
        return EmbedConfig(
            model=self.embed_model,
            backend=backend,
            device=self.embed_device,
            model_dir=str(home / "models" / "embedding"),
            progress=True,
        )

    def near_config(self) -> NearDedupConfig:
        return NearDedupConfig(threshold=self.near_threshold)

    def semantic_config(self) -> SemDedupConfig:
        return SemDedupConfig(eps=self.semantic_eps)

    def topic_config(self) -> TopicConfig:
        return TopicConfig(n_clusters=self.topics or None)

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(
            mode=self.sampling_mode, retain_fraction=self.retain_fraction, eval_fraction=self.eval_fraction
        )


def _day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def _write_drops(lake: Lake, day: date, stage: str, drops: pl.DataFrame) -> None:
    lake.write("drops", day, schema.conform(drops, schema.DROPS), part=stage, replace=False)


def _reasons(drops: pl.DataFrame) -> dict[str, int]:
    if drops.is_empty():
        return {}
    return dict(drops.group_by("reason_code").len().sort("len", descending=True).iter_rows())


def _state(settings: FlywheelSettings, name: str) -> Path:
    return Path(settings.home) / "state" / name


# ---- privacy ----------------------------------------------------------------------------------


@dg.asset(
    deps=["conversations"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(schema.CONVERSATIONS),
    description="Accepted messages with emails, phones, cards, IPs, token URLs and handles replaced by typed "
    "placeholders; per-row `pii_types`.",
    check_specs=[suite_spec("scrubbed_conversations", "conversations", blocking=True)],
)
def scrubbed_conversations(context: dg.AssetExecutionContext, settings: FlywheelSettings):
    day, lake = _day(context), settings.lake()
    conv = lake.read("conversations", day)
    scrubbed, counts = scrub_frame(conv, PrivacyConfig())
    lake.write("scrubbed_conversations", day, scrubbed)
    lake.write("pii_counts", day, counts.with_columns(pl.lit(day).alias("day")))
    by_type = dict(zip(counts["pii_type"].to_list(), counts["items"].to_list()))
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": scrubbed.height,
            "rows_with_pii": int(scrubbed.filter(pl.col("pii_types").list.len() > 0).height),
            "pii_items": int(sum(by_type.values())),
            "pii_by_type": counts_table(by_type, key="pii_type"),
        }
    )
    _, check = run_suite(
        "scrubbed_conversations",
        "conversations",
        scrubbed.drop("pii_types"),
        lake.previous_rows("scrubbed_conversations", day),
    )
    yield check


# ---- static prompts ---------------------------------------------------------------------------


@dg.asset(
    deps=["scrubbed_conversations"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(schema.PROMPTS),
    description="Each conversation cut at its user turns: history, served response and its engagement labels.",
    check_specs=[suite_spec("static_prompts", "prompts", blocking=True), conservation_spec("static_prompts")],
)
def static_prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings):
    day, lake = _day(context), settings.lake()
    prompts, drops = cut_prompts(lake.read("scrubbed_conversations", day), PromptConfig())
    lake.write("static_prompts", day, prompts)
    _write_drops(lake, day, "prompts", drops)
    summary = summarize(prompts, drops)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": prompts.height,
            "user_turns": summary["user_turns"],
            "answered": summary["answered"],
            "continued_rate": float(summary["continued_rate"] or 0.0),
            "mean_depth_after": float(summary["mean_depth_after"] or 0.0),
            "drops_by_reason": counts_table(summary["drops_by_reason"]),
            "preview": md_table(
                prompts.select("prompt_id", "last_user", "served_response", "continued", "depth_after")
            ),
        }
    )
    _, check = run_suite("static_prompts", "prompts", prompts, lake.previous_rows("static_prompts", day))
    yield check
    turn_drops = drops.filter(pl.col("reason_code").is_in(TURN_DROP_REASONS))
    outcome = check_stage_conservation(
        "prompts", rows_in=int(summary["user_turns"]), rows_out=prompts.height, drops=turn_drops
    )
    yield result("static_prompts", "conservation", outcome)


# ---- exact + near dedup -----------------------------------------------------------------------


@dg.asset(
    deps=["static_prompts"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(schema.PROMPTS),
    description="Static prompts without exact duplicates (normalized text, against every earlier day too) and "
    "MinHash near duplicates (one kept representative per group).",
    check_specs=[conservation_spec("deduped_prompts")],
)
def deduped_prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = _day(context), settings.lake()
    prompts = lake.read("static_prompts", day)
    seen = (
        lake.scan("prompt_hashes").filter(pl.col("day") < day).select("text_hash", "day").collect()
        if lake.exists("prompt_hashes")
        else None
    )
    exact = exact_dedup(prompts, seen, ExactDedupConfig())
    near = near_dedup(exact.kept, curation.near_config(), index_path=_state(settings, "near_dedup"))
    kept = near.kept
    lake.write("deduped_prompts", day, kept)
    lake.write("prompt_hashes", day, exact.hashes)
    _write_drops(lake, day, "exact_dedup", exact.drops)
    _write_drops(lake, day, "near_dedup", near.drops)
    n = max(prompts.height, 1)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": kept.height,
            "rows_in": prompts.height,
            "exact_dup_rate": round(exact.drops.height / n, 5),
            "exact_cross_day": int(exact.stats.get("exact_cross_day", 0)),
            "near_dup_rate": round(near.drops.height / n, 5),
            "near_groups": int(near.stats.get("groups", 0)),
            "largest_near_group": int(near.stats.get("largest_group", 0)),
            "skipped_short": int(near.stats.get("skipped_short", 0)),
            "examples": md_table(near.drops.select("row_id", "kept_id", "detail"), max_rows=5),
        }
    )
    yield conservation(
        "deduped_prompts",
        "dedup",
        prompts,
        kept,
        pl.concat([exact.drops, near.drops]).with_columns(pl.lit("dedup").alias("stage")),
        "prompt_id",
    )


# ---- embeddings -------------------------------------------------------------------------------


def _embed_texts(prompts: pl.DataFrame, curation: CurationSettings) -> pl.Series:
    return tail_text(prompts, curation.embed_turns)


@dg.asset(
    deps=["deduped_prompts"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"sentence-transformers", "parquet"},
    metadata=schema_metadata({"prompt_id": pl.Utf8, "text_hash": pl.Utf8, "model_id": pl.Utf8, "day": pl.Date}),
    description="Sentence embeddings of each prompt's last turns. Vectors live in the `embeddings` cache "
    "(text hash x model): a text is embedded once per model, ever.",
)
def prompt_embeddings(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = _day(context), settings.lake()
    prompts = lake.read("deduped_prompts", day)
    config = curation.embed_config(Path(settings.home))
    cache = EmbeddingCache(lake.table_dir("embeddings"), config.model_id)
    texts = _embed_texts(prompts, curation)
    vectors, stats = embed_with_stats(texts, config, cache)
    index = pl.DataFrame(
        {
            "prompt_id": prompts["prompt_id"],
            "text_hash": text_hashes(texts.to_list()),
            "model_id": [config.model_id] * prompts.height,
            "day": [day] * prompts.height,
        },
        schema={"prompt_id": pl.Utf8, "text_hash": pl.Utf8, "model_id": pl.Utf8, "day": pl.Date},
    )
    lake.write("prompt_embeddings", day, index)
    meta = {k: v for k, v in stats.as_metadata().items() if isinstance(v, (int, float, str))}
    return dg.MaterializeResult(metadata={"dagster/row_count": prompts.height, "dim": int(vectors.shape[1]), **meta})


def _vectors(
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
    deps=["prompt_embeddings"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"faiss", "parquet"},
    metadata=schema_metadata(schema.PROMPTS),
    description="Prompts without semantic duplicates (SemDeDup: k-means, then cosine >= 1 - eps within a "
    "cluster), also against the vectors kept on earlier days (a FAISS index per day).",
    check_specs=[conservation_spec("unique_prompts")],
)
def unique_prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = _day(context), settings.lake()
    prompts = lake.read("deduped_prompts", day)
    index, vectors = _vectors(lake, day, curation, settings)
    order = index["prompt_id"].to_list()
    if order != prompts["prompt_id"].to_list():
        prompts = prompts.join(index.select("prompt_id").with_row_index("_i"), on="prompt_id").sort("_i").drop("_i")
    res = semantic_dedup(
        prompts["prompt_id"],
        vectors,
        curation.semantic_config(),
        day=day,
        texts=prompts["text"],
        history=SemanticIndex(_state(settings, "semdedup")),
    )
    kept = prompts.filter(pl.Series(res.kept_mask))
    lake.write("unique_prompts", day, kept)
    _write_drops(lake, day, "semantic_dedup", res.drops)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": kept.height,
            "rows_in": prompts.height,
            "semantic_dup_rate": round(res.drops.height / max(prompts.height, 1), 5),
            **{k: v for k, v in res.stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            "examples": md_table(res.drops.select("row_id", "kept_id", "detail"), max_rows=5),
        }
    )
    yield conservation(
        "unique_prompts",
        "semdedup",
        prompts,
        kept,
        res.drops.with_columns(pl.lit("semdedup").alias("stage")),
        "prompt_id",
    )


# ---- topics -----------------------------------------------------------------------------------


@dg.asset(
    deps=["unique_prompts"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"faiss", "parquet"},
    metadata=schema_metadata({k: v for k, v in clusters_schema(1).items() if k != "centroid"}, day=pl.Date),
    description="Topic clusters of the day's unique prompts (FAISS k-means), each labelled by its most "
    "distinctive terms (c-TF-IDF), with size, share, examples and a 2-D map.",
    check_specs=[suite_spec("topics", "clusters", blocking=False)],
)
def topics(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = _day(context), settings.lake()
    prompts = lake.read("unique_prompts", day)
    index, vectors = _vectors(lake, day, curation, settings)
    keep = index.with_row_index("_i").join(prompts.select("prompt_id"), on="prompt_id", how="semi")
    vectors = vectors[keep["_i"].to_numpy()]
    texts = keep.select("prompt_id").join(prompts.select("prompt_id", "history"), on="prompt_id", how="left")
    assignments, clusters = fit_topics(
        vectors, _embed_texts(texts, curation), keep["prompt_id"], curation.topic_config()
    )
    lake.write("topic_assignments", day, assignments.with_columns(pl.lit(day).alias("day")))
    lake.write("clusters", day, clusters.with_columns(pl.lit(day).alias("day")))
    png = plot_topic_map(vectors, assignments, clusters, settings.reports_dir / "topics" / f"{day}.png")
    table = clusters.select(
        "cluster_id", "size", pl.col("share").round(4), "label", pl.col("examples").list.first().alias("example")
    )
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": clusters.height,
            "prompts": int(assignments.height),
            "largest_share": float(clusters["share"].max() or 0.0),
            "clusters": md_table(table.sort("size", descending=True), max_rows=50),
            "map": png_markdown(png, "topic map"),
            "map_path": dg.MetadataValue.path(str(png)),
        }
    )
    _, check = run_suite("topics", "clusters", clusters, lake=lake, day=day)
    yield check


# ---- the prompt pool --------------------------------------------------------------------------


@dg.asset(
    deps=["topics"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(schema.PROMPTS, split=pl.Utf8, cluster_id=pl.Int32),
    description="The day's prompt pool: a diverse, cluster-balanced (or stratified) sample of unique prompts "
    "with their topic and a train / eval_internal / eval_user split by user.",
    check_specs=[
        suite_spec("prompts", "prompts", blocking=True),
        conservation_spec("prompts"),
        dg.AssetCheckSpec(
            "split_disjoint",
            asset="prompts",
            blocking=True,
            description="No user is on both the train and an eval side.",
        ),
    ],
)
def prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = _day(context), settings.lake()
    unique = lake.read("unique_prompts", day)
    assignments = lake.read("topic_assignments", day).select(pl.col("row_id").alias("prompt_id"), "cluster_id")
    frame = unique.join(assignments, on="prompt_id", how="left")
    pool, drops, report = sample_pool(frame, curation.sampling_config())
    lake.write("prompts", day, pool)
    lake.write("sampling_report", day, report.with_columns(pl.lit(day).alias("day")))
    _write_drops(lake, day, "sampling", drops)
    splits = dict(pool.group_by("split").len().sort("split").iter_rows()) if pool.height else {}
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": pool.height,
            "rows_in": frame.height,
            "splits": counts_table(splits, key="split"),
            "shares": md_table(report.filter(pl.col("dimension") != "split"), max_rows=30),
            "preview": md_table(pool.select("prompt_id", "cluster_id", "split", "last_user")),
        }
    )
    _, check = run_suite("prompts", "prompts", pool, lake.previous_rows("prompts", day), lake=lake, day=day)
    yield check
    yield conservation("prompts", "sampling", frame, pool, drops, "prompt_id")
    yield result("prompts", "split_disjoint", check_split_disjoint(pool))


CURATION_ASSETS = [
    scrubbed_conversations,
    static_prompts,
    deduped_prompts,
    prompt_embeddings,
    unique_prompts,
    topics,
    prompts,
]
