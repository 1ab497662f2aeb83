"""Curation assets: one day of `conversations` into a deduplicated, clustered, sampled prompt pool.

conversations -> scrubbed_conversations -> static_prompts -> deduped_prompts -> prompt_embeddings
-> unique_prompts -> topics -> prompts

Each asset reads its inputs from the lake, calls one library function and publishes its result
through `assets.steps.publish` (partition, drops, metadata, conservation check). A step whose inputs,
settings and code are unchanged is not redone (`assets.versions`).

The cross-day steps live in `assets.cross_day` and what every step shares (settings, the memo) in
`assets.curation_steps`. Cross-day steps (`deduped_prompts`: exact and near dedup; `unique_prompts`: semantic
dedup) depend on their own previous day's partition. Dagster therefore runs a backfill's days of these
assets in order, whatever the concurrency, and the step itself refuses a day whose previous day has not been
committed, naming the missing days (`pipeline.history`). The first day of the history is
`history_start` (default: the first partition).
"""

import dagster as dg
import polars as pl

from assets.checks import conservation_spec, result, run_suite, suite_spec
from assets.cross_day import day_vectors, deduped_prompts, embedded_texts, unique_prompts
from assets.curation_steps import GROUP, CurationSettings, finish, partition_day, step_memo
from assets.embedding_shards import prompt_embeddings
from assets.metadata import counts_table, png_markdown, preview_table, schema_metadata
from assets.partitions import daily
from assets.resources import FlywheelSettings
from assets.steps import one_writer, publish
from pipeline import schema
from pipeline.privacy import landed_scrub_step
from pipeline.privacy_config import PrivacyConfig
from pipeline.prompts import TURN_DROP_REASONS, PromptConfig, cut_prompts
from pipeline.sampling import sample_step
from pipeline.step import StepCounters, StepResult
from pipeline.topics import clusters_schema, fit_topics, plot_topic_map
from quality.contracts import check_split_disjoint, check_stage_conservation
from quality.row_counts import row_count_history

# ---- privacy ----------------------------------------------------------------------------------


@dg.asset(
    deps=["conversations"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(schema.CONVERSATIONS),
    code_version="scrub-2",
    description="Accepted messages as curation reads them, past the blocking suite: emails, phones, cards, IPs, "
    "token URLs and handles replaced by typed placeholders (at ingest, before `conversations` is written), "
    "per-row `pii_types`, counts per type in metadata.",
    check_specs=[suite_spec("scrubbed_conversations", "conversations", blocking=True)],
)
@one_writer
def scrubbed_conversations(context: dg.AssetExecutionContext, settings: FlywheelSettings):
    day, lake = partition_day(context), settings.lake()
    memo, replayed = step_memo(context, settings, lake, "scrubbed_conversations", ["conversations"], PrivacyConfig())
    if replayed is not None:
        yield from replayed
        return
    conv = lake.read("conversations", day)
    # ingest scrubs and counts; a landing partition from before that (raw text) is scrubbed and counted here
    landed = "pii_types" in conv.columns
    counts = lake.read("pii_counts", day) if landed and lake.exists("pii_counts", day) else None
    step = landed_scrub_step(conv, counts, PrivacyConfig())
    scrubbed, counts = step.kept, step.tables["pii_counts"]
    if not landed:
        lake.write("pii_counts", day, counts.with_columns(pl.lit(day).alias("day")))
    by_type = dict(zip(counts["pii_type"].to_list(), counts["items"].to_list()))
    published = publish(
        lake,
        day,
        "scrubbed_conversations",
        {"privacy": step},
        contract=schema.SCRUBBED_CONVERSATIONS,
        metadata={
            "pii_by_type": counts_table(by_type, key="pii_type"),
        },
    )
    _, check = run_suite(
        "scrubbed_conversations",
        "conversations",
        scrubbed.drop("pii_types"),
        row_count_history(lake, "scrubbed_conversations", day),
    )
    published.checks.append(check)
    yield from finish(memo, published)


# ---- static prompts ---------------------------------------------------------------------------


@dg.asset(
    deps=["scrubbed_conversations"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(schema.PROMPTS),
    code_version="prompts-1",
    description="Each conversation cut at its user turns: history, served response and its engagement labels.",
    check_specs=[suite_spec("static_prompts", "prompts", blocking=True), conservation_spec("static_prompts")],
)
@one_writer
def static_prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings):
    day, lake = partition_day(context), settings.lake()
    memo, replayed = step_memo(context, settings, lake, "static_prompts", ["scrubbed_conversations"], PromptConfig())
    if replayed is not None:
        yield from replayed
        return
    step = cut_prompts(lake.read("scrubbed_conversations", day), PromptConfig())
    prompts, drops = step.frames
    turn_drops = drops.filter(pl.col("reason_code").is_in(TURN_DROP_REASONS))
    published = publish(lake, day, "static_prompts", {"prompts": step}, contract=schema.PROMPTS)
    _, check = run_suite("static_prompts", "prompts", prompts, row_count_history(lake, "static_prompts", day))
    # conservation counts user turns (messages that never became a turn are accounted for by ingest)
    outcome = check_stage_conservation(
        "prompts", rows_in=step.counters.rows_in, rows_out=prompts.height, drops=turn_drops
    )
    published.checks += [check, result("static_prompts", "conservation", outcome)]
    yield from finish(memo, published)


# ---- exact + near dedup -----------------------------------------------------------------------


@dg.asset(
    deps=["unique_prompts"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"faiss", "parquet"},
    metadata=schema_metadata({k: v for k, v in clusters_schema(1).items() if k != "centroid"}, day=pl.Date),
    code_version="topics-2",
    description="Topic clusters of the day's unique prompts (FAISS k-means), each labelled by its most "
    "distinctive terms (c-TF-IDF), with size, share, examples and a 2-D map.",
    check_specs=[suite_spec("topics", "clusters", blocking=False)],
)
@one_writer
def topics(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = partition_day(context), settings.lake()
    png_path = settings.reports_dir / "topics" / f"{day}.png"
    memo, replayed = step_memo(
        context,
        settings,
        lake,
        "clusters",
        ["unique_prompts", "prompt_embeddings"],
        (curation.topic_config(), curation.embed_turns),
        replayable=png_path.is_file(),
    )
    if replayed is not None:
        yield from replayed
        return
    prompts = lake.read("unique_prompts", day)
    index, vectors = day_vectors(lake, day, curation, settings)
    keep = index.with_row_index("_i").join(prompts.select("prompt_id"), on="prompt_id", how="semi")
    vectors = vectors[keep["_i"].to_numpy()]
    texts = keep.select("prompt_id").join(prompts.select("prompt_id", "history"), on="prompt_id", how="left")
    assignments, clusters = fit_topics(
        vectors, embedded_texts(texts, curation), keep["prompt_id"], curation.topic_config()
    )
    lake.write("topic_assignments", day, assignments.with_columns(pl.lit(day).alias("day")))
    png = plot_topic_map(vectors, assignments, clusters, png_path)
    table = clusters.select(
        "cluster_id", "size", pl.col("share").round(4), "label", pl.col("examples").list.first().alias("example")
    )
    clusters = clusters.with_columns(pl.lit(day).alias("day"))
    step = StepResult(clusters, schema.empty(schema.DROPS), StepCounters(int(assignments.height), clusters.height))
    published = publish(
        lake,
        day,
        "clusters",
        {"topics": step},
        contract=None,
        metadata={
            "prompts": int(assignments.height),
            "largest_share": float(clusters["share"].max() or 0.0),
            "clusters": preview_table(table.sort("size", descending=True), max_rows=50),
            "map": png_markdown(png, "topic map"),
            "map_path": dg.MetadataValue.path(str(png)),
        },
    )
    _, check = run_suite("topics", "clusters", clusters.drop("day"), lake=lake, day=day)
    published.checks.append(check)
    yield from finish(memo, published)


# ---- the prompt pool --------------------------------------------------------------------------


@dg.asset(
    deps=["topics"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    metadata=schema_metadata(schema.PROMPTS, split=pl.Utf8, cluster_id=pl.Int32),
    code_version="sampling-1",
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
@one_writer
def prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = partition_day(context), settings.lake()
    memo, replayed = step_memo(
        context, settings, lake, "prompts", ["unique_prompts", "topic_assignments"], curation.sampling_config()
    )
    if replayed is not None:
        yield from replayed
        return
    unique = lake.read("unique_prompts", day)
    assignments = lake.read("topic_assignments", day).select(pl.col("row_id").alias("prompt_id"), "cluster_id")
    frame = unique.join(assignments, on="prompt_id", how="left")
    step = sample_step(frame, curation.sampling_config())
    pool, report = step.kept, step.tables["sampling_report"]
    lake.write("sampling_report", day, report.with_columns(pl.lit(day).alias("day")))
    splits = dict(pool.group_by("split").len().sort("split").iter_rows()) if pool.height else {}
    published = publish(
        lake,
        day,
        "prompts",
        {"sampling": step},
        contract=schema.POOL,
        rows_in=frame,
        metadata={
            "splits": counts_table(splits, key="split"),
            "shares": preview_table(report.filter(pl.col("dimension") != "split"), max_rows=30),
        },
    )
    _, check = run_suite("prompts", "prompts", pool, row_count_history(lake, "prompts", day), lake=lake, day=day)
    published.checks += [check, result("prompts", "split_disjoint", check_split_disjoint(pool))]
    yield from finish(memo, published)


CURATION_ASSETS = [
    scrubbed_conversations,
    static_prompts,
    deduped_prompts,
    prompt_embeddings,
    unique_prompts,
    topics,
    prompts,
]
