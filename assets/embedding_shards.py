"""`prompt_embeddings` as a sharded step: one asset, and inside it a plan, N shard steps and a collect step.

    plan -> embed[shard_0], ..., embed[shard_N-1] -> collect

The plan fixes the day's batches once (`pipeline.batch_plan`) and writes each shard's texts to the run's
shuffle folder (`pipeline.shuffle`); each shard step encodes its batches and writes their vectors there; the
collect step adds the vectors to the embedding cache and publishes the table. The steps are Dagster's: the
multiprocess executor runs W shard steps at once on one machine, the Kubernetes Job executor one Job per
step on a cluster, and the run shows each shard as a step of its own. The asset graph keeps one asset.

Nothing passes between the steps through Dagster's IO managers (every output is Nothing): the files in
FLYWHEEL_HOME are the only hand-over, so a step pod of a cluster needs nothing but the shared volume. The
shuffle folder is the root run's, so a shard re-executed from failure finds the plan its run made.
"""

import dataclasses
import warnings
from pathlib import Path

import dagster as dg
import polars as pl

from assets.cross_day import embedded_texts
from assets.curation_steps import GROUP, CurationSettings, partition_day
from assets.metadata import schema_metadata
from assets.partitions import daily
from assets.resources import FlywheelSettings
from assets.steps import publish
from assets.versions import StepMemo, fingerprint
from pipeline import schema
from pipeline.batch_plan import encode_batches, plan_embedding
from pipeline.crash import crash_point
from pipeline.embedder import get_embedder
from pipeline.embedding_cache import EmbeddingCache
from pipeline.locks import writer_lock
from pipeline.shuffle import Shuffle
from pipeline.step import StepCounters, StepResult

ASSET = "prompt_embeddings"
SHARD_KEY = "shard_"


def _memo(context: dg.OpExecutionContext, settings: FlywheelSettings, curation: CurationSettings) -> StepMemo:
    """The asset's memo, as `assets.curation_steps.step_memo` keys it (the shard count is no part of it: the
    table is the same at any number of shards)."""
    day, lake = partition_day(context), settings.lake()
    config = curation.embed_config(Path(settings.home))
    code = context.assets_def.code_versions_by_key.get(dg.AssetKey(ASSET)) or ""
    files = lake.files("deduped_prompts", day)
    return StepMemo(settings.home, ASSET, day, fingerprint(code, (config.model_id, curation.embed_turns), files))


def _replay(memo: StepMemo, settings: FlywheelSettings, day) -> list | None:
    events = memo.replay(settings.lake().partition_dir(ASSET, day) / "part-0.parquet")
    return None if events is None else list(events)


def _worker_config(settings: FlywheelSettings, curation: CurationSettings):
    """The encoder of a worker: its share of the cores, so W encoders at once never oversubscribe the machine
    (one worker alone keeps the encoder's own default, every core, as a one-process day always had)."""
    config, shards = curation.embed_config(Path(settings.home)), curation.shard_config()
    if shards.workers == 1 and not shards.threads:
        return config
    return dataclasses.replace(config, num_threads=shards.threads_per_worker())


def _shuffle(context: dg.OpExecutionContext, settings: FlywheelSettings) -> Shuffle:
    root = context.run.root_run_id or context.run_id
    return Shuffle(settings.home, root, ASSET, partition_day(context))


@dg.op(
    ins={"deduped_prompts": dg.In(dg.Nothing)},
    out={"shard": dg.DynamicOut(dg.Nothing), "planned": dg.Out(dg.Nothing)},
    description="The day's embedding batches, fixed once and dealt to the shards (none when nothing changed).",
)
def plan_embeddings(context: dg.OpExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = partition_day(context), settings.lake()
    shards = curation.shard_config().resolved_shards
    if _replay(_memo(context, settings, curation), settings, day) is not None:
        context.log.info(f"{ASSET} of {day}: inputs, settings and code unchanged; no shard runs")
        yield dg.Output(None, output_name="planned")
        return
    config = curation.embed_config(Path(settings.home))
    prompts = lake.read("deduped_prompts", day)
    cache = EmbeddingCache(lake.table_dir("embeddings"), config.model_id)
    plan = plan_embedding(
        prompts["prompt_id"],
        embedded_texts(prompts, curation),
        lambda hashes: set(cache.lookup(hashes)["text_hash"].to_list()),
        batch_size=config.resolved_batch_size(),
        shards=shards,
        # batches cut by the encoder's tokens, as one call of the encoder cuts them; the encoder is loaded (and,
        # in a fresh home, exported) here only when there is something to encode, so the shards only read it
        lengths=lambda texts: get_embedder(_worker_config(settings, curation)).token_counts(texts),
    )
    shuffle = _shuffle(context, settings)
    for shard in range(shards):
        shuffle.write(f"plan-{shard}", plan.shard(shard))
    shuffle.write("index", plan.index)
    context.log.info(
        f"{ASSET} of {day}: {plan.batches.height} texts to encode in {plan.n_batches} batches over {shards} shards "
        f"({plan.cache_hits} of {plan.n_distinct} distinct texts cached)"
    )
    yield dg.Output(
        None,
        output_name="planned",
        metadata={"texts_to_encode": plan.batches.height, "batches": plan.n_batches, "shards": shards},
    )
    for shard in range(shards):
        yield dg.DynamicOutput(None, output_name="shard", mapping_key=f"{SHARD_KEY}{shard}")


@dg.op(
    ins={"shard": dg.In(dg.Nothing)},
    out=dg.Out(dg.Nothing),
    description="One shard's batches of the plan encoded; their vectors written to the run's shuffle folder.",
)
def embed_shard(context: dg.OpExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    shard = int(context.get_mapping_key().removeprefix(SHARD_KEY))
    shuffle = _shuffle(context, settings)
    batches = shuffle.read(f"plan-{shard}")
    if batches.height == 0:
        shuffle.write(f"vectors-{shard}", pl.DataFrame(schema={"text_hash": pl.Utf8}))
        yield dg.Output(None, metadata={"texts": 0})
        return
    embedder = get_embedder(_worker_config(settings, curation))
    vectors = encode_batches(batches, embedder.encode, embedder.dim)
    crash_point(f"embed_shard_{shard}")
    shuffle.write(f"vectors-{shard}", vectors)
    yield dg.Output(None, metadata={"texts": vectors.height, "batches": batches["batch"].n_unique()})


@dg.op(
    ins={"planned": dg.In(dg.Nothing), "encoded": dg.In(dg.Nothing)},
    out=dg.Out(dg.Nothing),
    description="The shards' vectors added to the embedding cache, and the day's table published.",
)
def collect_embeddings(context: dg.OpExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day = partition_day(context)
    with writer_lock(settings.home, ASSET, context.partition_key, owner=context.run_id):
        memo = _memo(context, settings, curation)
        replayed = _replay(memo, settings, day)
        if replayed is None:
            published = _publish(context, settings, curation)
            memo.save(published)
            replayed = [published.materialization]
    # a run that found the table already published (a second run of the day) leaves no files behind either
    _shuffle(context, settings).clear()
    for event in replayed:
        with warnings.catch_warnings():
            # an op's Output is the only way the last step of a graph asset reports the table's data version
            warnings.simplefilter("ignore", dg.BetaWarning)
            output = dg.Output(None, metadata=dict(event.metadata or {}), data_version=event.data_version)
        yield output


def _publish(context: dg.OpExecutionContext, settings: FlywheelSettings, curation: CurationSettings):
    day, lake = partition_day(context), settings.lake()
    config = curation.embed_config(Path(settings.home))
    shuffle = _shuffle(context, settings)
    index = shuffle.read("index")
    shards = sorted(int(p.stem.removeprefix("plan-")) for p in shuffle.dir.glob("plan-*.parquet"))
    parts = [shuffle.read(f"vectors-{s}") for s in shards]
    vectors = pl.concat([p for p in parts if p.height]) if any(p.height for p in parts) else None
    if vectors is not None:
        # in plan order, whatever order the shards finished in: the cache part is the same file at any N
        order = pl.concat([shuffle.read(f"plan-{s}").select("text_hash", "batch") for s in shards])
        vectors = vectors.join(order, on="text_hash").sort("batch", "text_hash").drop("batch")
        EmbeddingCache(lake.table_dir("embeddings"), config.model_id).add(vectors)
    table = index.with_columns(model_id=pl.lit(config.model_id), day=pl.lit(day))
    step = StepResult(table, schema.empty(schema.DROPS), StepCounters(index.height, table.height))
    encoded = 0 if vectors is None else vectors.height
    published = publish(
        lake,
        day,
        ASSET,
        {"embed": step},
        contract=schema.PROMPT_EMBEDDINGS,
        metadata={
            "model_id": config.model_id,
            "texts": index.height,
            "n_distinct": index["text_hash"].n_unique(),
            "encoded": encoded,
            "cache_hits": index["text_hash"].n_unique() - encoded,
            "shards": len(shards),
        },
    )
    shuffle.clear()
    return published


@dg.graph_asset(
    name=ASSET,
    ins={"deduped_prompts": dg.AssetIn(dagster_type=dg.Nothing)},
    partitions_def=daily,
    group_name=GROUP,
    kinds={"sentence-transformers", "parquet"},
    metadata=schema_metadata({"prompt_id": pl.Utf8, "text_hash": pl.Utf8, "model_id": pl.Utf8, "day": pl.Date}),
    code_version="embed-2",
    description="Sentence embeddings of each prompt's last turns, encoded in shards (`shards`, `workers` of the "
    "curation settings) from one plan of the day's batches, so the vectors are the same at any number of shards. "
    "Vectors live in the `embeddings` cache (text hash x model): a text is embedded once per model, ever.",
)
def prompt_embeddings(deduped_prompts):
    plan = plan_embeddings(deduped_prompts=deduped_prompts)
    encoded = plan.shard.map(lambda shard: embed_shard(shard=shard)).collect()
    return collect_embeddings(planned=plan.planned, encoded=encoded)
