"""Curation assets: one day of `conversations` into a deduplicated, clustered, sampled prompt pool.

conversations -> scrubbed_conversations -> static_prompts -> deduped_prompts -> prompt_embeddings
-> unique_prompts -> topics -> prompts

Each asset reads its inputs from the lake, calls one library function and publishes its result
through `assets.steps.publish` (partition, drops, metadata, conservation check). A step whose inputs,
settings and code are unchanged is not redone (`assets.versions`).

Cross-day steps (`deduped_prompts`: exact and near dedup; `unique_prompts`: semantic dedup) depend on
their own previous day's partition. Dagster therefore runs a backfill's days of these assets in
order, whatever the concurrency, and the step itself refuses a day whose previous day has not been
committed, naming the missing days (`pipeline.history`). The first day of the history is
`history_start` (default: the first partition).
"""

import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.checks import conservation_spec, result, run_suite, suite_spec
from assets.jobs import IN_FLIGHT
from assets.metadata import counts_table, png_markdown, preview_table, schema_metadata
from assets.partitions import PARTITIONS_START, PREVIOUS_DAY, daily
from assets.resources import FlywheelSettings
from assets.steps import one_writer, publish
from assets.versions import StepMemo
from pipeline import schema
from pipeline.dedup_exact import ExactDedupConfig, exact_dedup
from pipeline.dedup_near import NearDedupConfig, near_dedup
from pipeline.embed import embed_with_stats
from pipeline.embed_config import EmbedConfig
from pipeline.embedding_cache import EmbeddingCache
from pipeline.history import DayChain, HistoryOrderError
from pipeline.lake import Lake
from pipeline.privacy import landed_scrub_step
from pipeline.privacy_config import PrivacyConfig
from pipeline.prompts import TURN_DROP_REASONS, PromptConfig, cut_prompts, tail_text
from pipeline.sampling import SamplingConfig, sample_step
from pipeline.semdedup import SemDedupConfig, history_kind, semantic_dedup
from pipeline.step import StepCounters, StepResult
from pipeline.text_hash import raw_text_hashes
from pipeline.topics import TopicConfig, clusters_schema, fit_topics, plot_topic_map
from quality.contracts import check_split_disjoint, check_stage_conservation
from quality.row_counts import row_count_history

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
    near_lookback_days: int = Field(default=0, description="near dedup compares with this many earlier days; 0 = all")
    semantic_eps: float = Field(default=0.05, description="cosine >= 1 - eps marks semantic duplicates")
    semantic_lookback_days: int = Field(
        default=0, description="semantic dedup compares with this many earlier days; 0 = all"
    )
    previous_day_wait_s: int = Field(
        default=30, description="a cross-day step whose previous day is still running waits this long, then retries"
    )
    previous_day_retries: int = Field(default=120, description="how many times it waits for the previous day")
    history_start: str = Field(
        default_factory=lambda: os.environ.get("FLYWHEEL_HISTORY_START") or PARTITIONS_START,
        description="FLYWHEEL_HISTORY_START: first day (YYYY-MM-DD) of the cross-day dedup history; earlier days "
        "are never looked at, and every later day needs the day before it deduplicated first",
    )
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
            # a bar in a terminal run, unless the terminal view asked the libraries for quiet (TQDM_DISABLE)
            progress=os.environ.get("TQDM_DISABLE", "") in ("", "0"),
        )

    def near_config(self) -> NearDedupConfig:
        return NearDedupConfig(threshold=self.near_threshold, lookback_days=self.near_lookback_days or None)

    def semantic_config(self) -> SemDedupConfig:
        return SemDedupConfig(eps=self.semantic_eps, lookback_days=self.semantic_lookback_days or None)

    def history(self, settings: FlywheelSettings, step: str, kind: str) -> DayChain:
        home = Path(settings.home)
        return DayChain(home / "state" / step, date.fromisoformat(self.history_start), kind, lock_home=home)

    def topic_config(self) -> TopicConfig:
        return TopicConfig(n_clusters=self.topics or None)

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(
            mode=self.sampling_mode, retain_fraction=self.retain_fraction, eval_fraction=self.eval_fraction
        )


def _day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def _previous_chain(history: DayChain, day: date) -> str:
    """The state a cross-day step of `day` builds on (raises, naming the days, when it is not in place)."""
    return f"{history.root.name}:{history.parent_chain(day)}"


def _base(context: dg.AssetExecutionContext, curation: CurationSettings, histories: list[DayChain], day: date):
    """The previous day's chain hashes of the step's histories.

    An asset backfill runs a cross-day step's days in order (the self-dependency), but a job backfill
    queues every day at once: a day whose previous day is still queued or running waits for it (retries)
    instead of failing; a day whose previous day is nowhere in flight is refused, naming the missing days.
    """
    try:
        return [_previous_chain(h, day) for h in histories]
    except HistoryOrderError as exc:
        prev = (day - timedelta(days=1)).isoformat()
        waiting = context.instance.get_runs(
            filters=dg.RunsFilter(statuses=IN_FLIGHT, tags={"dagster/partition": prev}), limit=1
        )
        if waiting:
            context.log.info(f"{prev} is still in flight (run {waiting[0].run_id}); waiting for it: {exc}")
            raise dg.RetryRequested(
                max_retries=curation.previous_day_retries, seconds_to_wait=curation.previous_day_wait_s
            ) from exc
        raise


def _report_stale(context: dg.AssetExecutionContext, histories: list[DayChain]) -> dict:
    stale = sorted({d.isoformat() for h in histories for d in h.stale_days()})
    if stale:
        context.log.warning(
            f"{context.asset_key.to_user_string()} of {context.partition_key} changed: later days {stale} were "
            "built on its old result and are stale; re-materialize them (a backfill over them runs them in order)"
        )
    return {"stale_later_days": ", ".join(stale) or "-"}


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
    day, lake = _day(context), settings.lake()
    memo, replayed = _memo(context, settings, lake, "scrubbed_conversations", ["conversations"], PrivacyConfig())
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
    yield from _finish(memo, published)


def _output(lake: Lake, table: str, day: date) -> Path:
    return lake.partition_dir(table, day) / "part-0.parquet"


def _memo(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    lake: Lake,
    output: str,
    inputs: list[str],
    config: object,
    extra: list[str] | None = None,
    *,
    replayable: bool = True,
) -> tuple[StepMemo, Iterator | None]:
    """The step's memo, with the events of its last run when they can be replayed: the inputs, settings and
    `extra` are those of that run, the `output` table's partition still holds what it wrote and, `replayable`,
    what the step keeps beside the table (a history's manifest, a plot) is in place. Else None: run the step."""
    memo = StepMemo.for_inputs(context, settings.home, lake, inputs, config, extra or ())
    return memo, memo.replay(_output(lake, output, _day(context))) if replayable else None


def _cross_day_memo(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    curation: CurationSettings,
    lake: Lake,
    output: str,
    inputs: list[str],
    config: object,
    histories: list[DayChain],
) -> tuple[StepMemo, Iterator | None]:
    """`_memo` of a step that compares a day with the days before it: the previous day's state of each of its
    histories is an input, and a replay needs the day recorded in each of them."""
    day = _day(context)
    base = _base(context, curation, histories, day)
    replayable = all(h.manifest(day) for h in histories)
    return _memo(context, settings, lake, output, inputs, config, base, replayable=replayable)


def _finish(memo: StepMemo, published):
    memo.save(published)
    yield published.materialization
    yield from published.checks


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
    day, lake = _day(context), settings.lake()
    memo, replayed = _memo(context, settings, lake, "static_prompts", ["scrubbed_conversations"], PromptConfig())
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
    yield from _finish(memo, published)


# ---- exact + near dedup -----------------------------------------------------------------------


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
    day, lake = _day(context), settings.lake()
    exact_config, near_config = ExactDedupConfig(), curation.near_config()
    exact_history = curation.history(settings, "exact_dedup", exact_config.history_kind())
    near_history = curation.history(settings, "near_dedup", near_config.history_kind())
    memo, replayed = _cross_day_memo(
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
        metadata=_report_stale(context, [exact_history, near_history]),
    )
    yield from _finish(memo, published)


# ---- embeddings -------------------------------------------------------------------------------


def _embed_texts(prompts: pl.DataFrame, curation: CurationSettings) -> pl.Series:
    return tail_text(prompts, curation.embed_turns)


@dg.asset(
    deps=["deduped_prompts"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"sentence-transformers", "parquet"},
    metadata=schema_metadata({"prompt_id": pl.Utf8, "text_hash": pl.Utf8, "model_id": pl.Utf8, "day": pl.Date}),
    code_version="embed-1",
    description="Sentence embeddings of each prompt's last turns. Vectors live in the `embeddings` cache "
    "(text hash x model): a text is embedded once per model, ever.",
)
@one_writer
def prompt_embeddings(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = _day(context), settings.lake()
    config = curation.embed_config(Path(settings.home))
    memo, replayed = _memo(
        context, settings, lake, "prompt_embeddings", ["deduped_prompts"], (config.model_id, curation.embed_turns)
    )
    if replayed is not None:
        yield from replayed
        return
    prompts = lake.read("deduped_prompts", day)
    cache = EmbeddingCache(lake.table_dir("embeddings"), config.model_id)
    texts = _embed_texts(prompts, curation)
    vectors, stats = embed_with_stats(texts, config, cache)
    index = pl.DataFrame(
        {
            "prompt_id": prompts["prompt_id"],
            "text_hash": raw_text_hashes(texts.to_list()),
            "model_id": [config.model_id] * prompts.height,
            "day": [day] * prompts.height,
        },
    )
    meta = {k: v for k, v in stats.as_metadata().items() if isinstance(v, (int, float, str))}
    step = StepResult(index, schema.empty(schema.DROPS), StepCounters(prompts.height, index.height))
    published = publish(
        lake,
        day,
        "prompt_embeddings",
        {"embed": step},
        contract=schema.PROMPT_EMBEDDINGS,
        metadata={"dim": int(vectors.shape[1]), **meta},
    )
    yield from _finish(memo, published)


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
    deps=["prompt_embeddings", dg.AssetDep("unique_prompts", partition_mapping=PREVIOUS_DAY)],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"faiss", "parquet"},
    metadata=schema_metadata(schema.PROMPTS),
    code_version="semdedup-2",
    description="Prompts without semantic duplicates (SemDeDup: k-means, then cosine >= 1 - eps within a "
    "cluster), also against the vectors kept on earlier days. Depends on its own previous day: the days of "
    "a backfill run in order.",
    check_specs=[conservation_spec("unique_prompts")],
)
@one_writer
def unique_prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = _day(context), settings.lake()
    config = curation.semantic_config()
    model_id = curation.embed_config(Path(settings.home)).model_id
    history = curation.history(settings, "semantic_dedup", history_kind(model_id))
    memo, replayed = _cross_day_memo(
        context, settings, curation, lake, "unique_prompts", ["deduped_prompts", "prompt_embeddings"], config, [history]
    )
    if replayed is not None:
        yield from replayed
        return
    prompts = lake.read("deduped_prompts", day)
    index, vectors = _vectors(lake, day, curation, settings)
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
        metadata={"eps": config.eps, "keep": config.keep, **_report_stale(context, [history])},
    )
    yield from _finish(memo, published)


# ---- topics -----------------------------------------------------------------------------------


@dg.asset(
    deps=["unique_prompts"],
    partitions_def=daily,
    group_name=GROUP,
    kinds={"faiss", "parquet"},
    metadata=schema_metadata({k: v for k, v in clusters_schema(1).items() if k != "centroid"}, day=pl.Date),
    code_version="topics-1",
    description="Topic clusters of the day's unique prompts (FAISS k-means), each labelled by its most "
    "distinctive terms (c-TF-IDF), with size, share, examples and a 2-D map.",
    check_specs=[suite_spec("topics", "clusters", blocking=False)],
)
@one_writer
def topics(context: dg.AssetExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = _day(context), settings.lake()
    png_path = settings.reports_dir / "topics" / f"{day}.png"
    memo, replayed = _memo(
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
    index, vectors = _vectors(lake, day, curation, settings)
    keep = index.with_row_index("_i").join(prompts.select("prompt_id"), on="prompt_id", how="semi")
    vectors = vectors[keep["_i"].to_numpy()]
    texts = keep.select("prompt_id").join(prompts.select("prompt_id", "history"), on="prompt_id", how="left")
    assignments, clusters = fit_topics(
        vectors, _embed_texts(texts, curation), keep["prompt_id"], curation.topic_config()
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
    yield from _finish(memo, published)


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
    day, lake = _day(context), settings.lake()
    memo, replayed = _memo(
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
    yield from _finish(memo, published)


CURATION_ASSETS = [
    scrubbed_conversations,
    static_prompts,
    deduped_prompts,
    prompt_embeddings,
    unique_prompts,
    topics,
    prompts,
]
