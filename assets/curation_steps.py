"""What the curation assets share: their settings, the partition they run on, and when a step may replay
its last run instead of running (the memo), including the previous day's state of a cross-day step."""

import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.jobs import IN_FLIGHT
from assets.partitions import PARTITIONS_START
from assets.resources import FlywheelSettings
from assets.versions import StepMemo
from pipeline.config_fields import field_default, field_help
from pipeline.dedup_near import NearDedupConfig
from pipeline.embed_config import EmbedConfig
from pipeline.history import DayChain, HistoryOrderError
from pipeline.lake import Lake
from pipeline.sampling import SamplingConfig
from pipeline.semdedup import SemDedupConfig
from pipeline.sharding import ShardConfig, int_from_env
from pipeline.topics import TopicConfig

GROUP = "curation"


class CurationSettings(dg.ConfigurableResource):
    """Knobs of the curation steps; defaults work offline on a laptop."""

    embed_model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="sentence-transformers model name or path (default: the packaged copy)",
    )
    embed_backend: str = Field(
        default="auto",
        description="auto (torch fp16 on a GPU; on a CPU onnx-int8-pertext: int8 with scales per text, so a "
        "vector never depends on its batch), onnx-int8-pertext, onnx-int8 (scales per batch), onnx (fp32) or "
        "torch; `pipeline.embed_config.EmbedConfig` resolves 'auto'",
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
    workers: int = Field(
        default_factory=lambda: int_from_env("workers", "FLYWHEEL_WORKERS", field_default(ShardConfig, "workers")),
        description=f"{field_help(ShardConfig, 'workers')} (env FLYWHEEL_WORKERS, read when the code location "
        "loads: it also sets the consolidation job's executor)",
    )
    shards: int = Field(
        default_factory=lambda: int_from_env("shards", "FLYWHEEL_SHARDS", field_default(ShardConfig, "shards")),
        description=f"{field_help(ShardConfig, 'shards')} (env FLYWHEEL_SHARDS)",
    )
    worker_threads: int = Field(
        default=field_default(ShardConfig, "threads"), description=field_help(ShardConfig, "threads")
    )
    topics: int = Field(default=0, description="topic clusters per day; 0 = automatic (about sqrt(n / 2))")
    retain_fraction: float = Field(default=0.5, description="share of unique prompts kept in the pool")
    sampling_mode: str = Field(default="cluster_balanced", description="cluster_balanced or stratified")
    eval_fraction: float = Field(default=0.1, description="share of users held out for evaluation")

    def embed_config(self, home: Path) -> EmbedConfig:
        return EmbedConfig(
            model=self.embed_model,
            backend=self.embed_backend,
            device=self.embed_device,
            model_dir=str(home / "models" / "embedding"),
            # a bar in a terminal run, unless the terminal view asked the libraries for quiet (TQDM_DISABLE)
            progress=os.environ.get("TQDM_DISABLE", "") in ("", "0"),
        )

    def shard_config(self) -> ShardConfig:
        return ShardConfig(workers=self.workers, shards=self.shards, threads=self.worker_threads)

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


def partition_day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def previous_chain(history: DayChain, day: date) -> str:
    """The state a cross-day step of `day` builds on (raises, naming the days, when it is not in place)."""
    return f"{history.root.name}:{history.parent_chain(day)}"


def history_base(context: dg.AssetExecutionContext, curation: CurationSettings, histories: list[DayChain], day: date):
    """The previous day's chain hashes of the step's histories.

    An asset backfill runs a cross-day step's days in order (the self-dependency), but a job backfill
    queues every day at once: a day whose previous day is still queued or running waits for it (retries)
    instead of failing; a day whose previous day is nowhere in flight is refused, naming the missing days.
    """
    try:
        return [previous_chain(h, day) for h in histories]
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


def report_stale(context: dg.AssetExecutionContext, histories: list[DayChain]) -> dict:
    stale = sorted({d.isoformat() for h in histories for d in h.stale_days()})
    if stale:
        context.log.warning(
            f"{context.asset_key.to_user_string()} of {context.partition_key} changed: later days {stale} were "
            "built on its old result and are stale; re-materialize them (a backfill over them runs them in order)"
        )
    return {"stale_later_days": ", ".join(stale) or "-"}


# ---- privacy ----------------------------------------------------------------------------------


def step_output(lake: Lake, table: str, day: date) -> Path:
    return lake.partition_dir(table, day) / "part-0.parquet"


def step_memo(
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
    return memo, memo.replay(step_output(lake, output, partition_day(context))) if replayable else None


def cross_day_memo(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    curation: CurationSettings,
    lake: Lake,
    output: str,
    inputs: list[str],
    config: object,
    histories: list[DayChain],
) -> tuple[StepMemo, Iterator | None]:
    """`step_memo` of a step that compares a day with the days before it: the previous day's state of each of its
    histories is an input, and a replay needs the day recorded in each of them."""
    day = partition_day(context)
    base = history_base(context, curation, histories, day)
    replayable = all(h.manifest(day) for h in histories)
    return step_memo(context, settings, lake, output, inputs, config, base, replayable=replayable)


def finish(memo: StepMemo, published):
    memo.save(published)
    yield published.materialization
    yield from published.checks
