"""Release assets: offline evaluation behind the release gates, the A/B readout, the generation record
and the generations report. The evaluation itself is `evaluation.offline_eval`; these assets read its
inputs from the lake, run it, write its tables and turn its gates into blocking checks.

A gate that fails at ERROR stops the run before the A/B readout and the record, so a generation that
overfits its judges, diverges between slices, regresses on steerability, drifts in style or was
trained on its eval prompts is never recorded (and the next run re-does it). A gate that only warns
fails its check at WARN severity, which shows in the UI and blocks nothing.
"""

import json
from dataclasses import asdict
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from assets.ab_readout import ab_readout
from assets.curation import CurationSettings
from assets.generation import (
    GROUP_RELEASE,
    GenerationPlan,
    GenerationSettings,
    current_plan,
    dataset_dir,
    models_dir,
    policy_dir,
    recorded_generations,
    reward_model_dir,
    write_generation_table,
)
from assets.herding import parent_policy
from assets.metadata import counts_table, preview_table, schema_metadata, table_metadata
from assets.resources import AbSettings, FlywheelSettings, ReleaseSettings
from assets.reward_models import load_judges
from assets.tables import gen_table, write_drops
from evaluation import release_gates
from evaluation.generation_report import write_generation_report
from evaluation.generation_report_config import GenerationReportConfig
from evaluation.generations_table import GENERATIONS
from evaluation.offline_eval import GATES, SLICES, STAGE, evaluate, trained_prompts
from evaluation.record import METRICS_TABLES, collect_metrics, generation_row, lineage_inputs
from evaluation.winrate import EVAL_RECORDS_SCHEMA
from pipeline.judge_data import JudgeDataConfig, PooledSlices, pooled_slices, time_ordered_split
from pipeline.lake import Lake, Partition
from pipeline.sampling import SamplingConfig
from pipeline.user_split import held_out_prompts
from training.generation_plan import read_history, read_window


def _training_prompts(settings: FlywheelSettings, lake: Lake, plan: GenerationPlan, pool: pl.DataFrame) -> pl.DataFrame:
    ids = {}
    for name in ("sft", "preference", "rl"):
        rows = dataset_dir(settings, plan.generation, name) / "rows.parquet"
        if rows.is_file():
            ids[name] = pl.read_parquet(rows, columns=["prompt_id"])["prompt_id"].to_list()
    return trained_prompts(ids, gen_table(lake, "candidate_prompts", plan), pool)


def held_out_slices(
    lake: Lake, plan: GenerationPlan, pool: pl.DataFrame, sampling: SamplingConfig, judge: JudgeDataConfig
) -> PooledSlices:
    """The prompts the generation is evaluated on: every deduped turn of the window's held-out users
    (`held_out_prompts`) and, in a slice with fewer than `judge.min_slice_users` users, held-out users of earlier
    days that nothing trained on (neither the judges' training users nor the pools' `train` splits)."""
    history = read_history(lake, "unique_prompts", plan, judge.max_earlier_days)
    start = plan.day_dates[0]
    window = history.filter(pl.col("day") >= start) if history.height else history
    earlier = history.filter(pl.col("day") < start) if history.height else history
    held_out = held_out_prompts(window, pool, sampling)
    if earlier.is_empty():
        return pooled_slices(held_out, earlier, sampling, judge)
    pools = read_history(lake, "prompts", plan, judge.max_earlier_days)
    trained = set(time_ordered_split(history, plan.day_dates, sampling, judge).train["user_hash"].drop_nulls())
    if pools.height:
        trained |= set(pools.filter(pl.col("split") == "train")["user_hash"].drop_nulls())
    return pooled_slices(held_out, earlier, sampling, judge, trained_users=trained)


def _gate_check(name: str, gate: release_gates.GateResult) -> dg.AssetCheckResult:
    """The gate as a blocking check: only an error blocks; a warning, or insufficient evidence (which neither
    passes nor blocks on its own), fails the check at WARN severity."""
    meta = {k: dg.MetadataValue.json(v) if isinstance(v, (dict, list, tuple)) else v for k, v in gate.metadata.items()}
    per_slice = f" (prompts per slice: {gate.metadata['n_per_slice']})" if "n_per_slice" in gate.metadata else ""
    return dg.AssetCheckResult(
        asset_key="offline_eval",
        check_name=name,
        passed=gate.severity == "ok",
        severity=dg.AssetCheckSeverity.ERROR if gate.severity == "error" else dg.AssetCheckSeverity.WARN,
        description=f"{gate.severity}: {gate.detail}{per_slice}",
        metadata={k: v for k, v in meta.items() if v is not None},
    )


@dg.asset(
    deps=["grpo_checkpoint", "reward_model_pointwise", "reward_model_pairwise"],
    group_name=GROUP_RELEASE,
    kinds={"pytorch", "parquet"},
    metadata=schema_metadata(EVAL_RECORDS_SCHEMA, policy=pl.Utf8),
    description="Offline evaluation of the new generation against its parent on held-out prompts: win rates per "
    "slice judged by this generation's pointwise and pairwise reward models (bootstrap CIs over held-out users), "
    "steerability, style monitors, false refusals and a few replies side by side; the release gates are its "
    "blocking checks (a gate with insufficient evidence warns, and the evidence rule bounds how many may).",
    check_specs=[dg.AssetCheckSpec(n, asset="offline_eval", blocking=True, description=d) for n, d in GATES.items()],
)
def offline_eval(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    generation: GenerationSettings,
    release: ReleaseSettings,
    curation: CurationSettings,
):
    plan, lake = current_plan(settings), settings.lake()
    pool = read_window(lake, "prompts", plan)
    if pool.is_empty():
        raise ValueError(f"no pool prompts for the days {plan.days}: materialize the consolidation job for them")
    judge = generation.judge_data_config(release.min_slice_users)
    slices = held_out_slices(lake, plan, pool, curation.sampling_config(), judge)
    held_out = slices.rows
    write_generation_table(lake, "eval_slice_users", plan, slices.users)
    # the judges embed with the embedder their features were trained on (the curation's); a judge the traffic had
    # too little data to train is None and judges nothing (its gates read it as insufficient evidence)
    judges = load_judges(settings, plan.generation, curation)
    result = evaluate(
        plan.generation,
        {"new": str(policy_dir(settings, plan.generation)), "parent": parent_policy(settings, generation, plan)},
        {"new": plan.generation, "parent": plan.parent},
        held_out,
        judges,
        _training_prompts(settings, lake, plan, pool),
        release.eval_config(generation),
        # the judges' own held-out validation decides whether they may judge
        gen_table(lake, "reward_model_metrics", plan),
    )
    for table, frame in result.tables().items():
        write_generation_table(lake, table, plan, frame)
    write_drops(lake, plan, STAGE, result.drops)
    ev, decision = result.evaluation, release_gates.release_decision(list(result.gates.values()))
    meta = {
        "generation": plan.generation,
        "parent": plan.parent,
        "release": dg.MetadataValue.md(f"**{decision.severity}**: {decision.detail}"),
        "eval_prompts": dg.MetadataValue.json({s: int((ev.evals["split"] == s).sum()) for s in SLICES}),
        # users per slice: the window's held-out users and those pooled from earlier days (`eval_slice_users`)
        "slice_users": dg.MetadataValue.json(slices.users_per_slice()),
        "slice_pooling_left_out": dg.MetadataValue.json(slices.dropped),
        **{name: preview_table(frame, 20) for name, frame in ev.overview().items()},
        "following_rate/new": ev.following_rate("new"),
        "drops_by_reason": counts_table(dict(result.drops.group_by("reason_code").len().iter_rows())),
        "tokens_per_s": dg.MetadataValue.json(result.tokens_per_s),
        "sampling_engines": dg.MetadataValue.json(result.engines),
    }
    if result.ifeval is not None:
        meta["ifeval"] = preview_table(result.ifeval)
    for r in ev.wr.summary.filter(pl.col("win_rate").is_not_null()).iter_rows(named=True):
        meta[f"win_rate/{r['slice']}/{r['judge']}"] = float(r["win_rate"])
    yield dg.MaterializeResult(metadata=meta)
    for name, gate in result.gates.items():
        yield _gate_check(name, gate)


@dg.asset(
    deps=[
        "offline_eval",
        "ab_readout",
        "grpo_checkpoint",
        "sft_dataset",
        "preference_dataset",
        "rl_prompts",
        "reward_model_report",
    ],
    group_name=GROUP_RELEASE,
    kinds={"parquet", "duckdb"},
    description="The generation's row in the `generations` table: parent, window, input content hashes, "
    "checkpoints, metrics, gate outcome and A/B verdict, and the run chart's measures as columns. Recording it "
    "ends the generation: the next `generation_plan` starts the next one. Materialized alone after a run its "
    "release gates stopped, it records that generation as blocked (never a parent) so the flywheel moves on.",
    metadata=schema_metadata(GENERATIONS),
)
def generation_record(context: dg.AssetExecutionContext, settings: FlywheelSettings, generation: GenerationSettings):
    plan, lake = current_plan(settings), settings.lake()
    root, parent = models_dir(settings, plan.generation), parent_policy(settings, generation, plan)
    inputs = lineage_inputs(
        {d: lake.files("prompts", d) for d in plan.days},
        {n: dataset_dir(settings, plan.generation, n) for n in ("sft", "preference", "rl")},
        lake.files("candidates", Partition.generation(plan.generation)),
        {k: reward_model_dir(settings, plan.generation, k) for k in ("pointwise", "pairwise")},
        parent,
        generation.annotations_path,
    )
    checkpoints = {"policy": str(policy_dir(settings, plan.generation)), "parent": parent}
    # a run of this asset alone is not stopped by the blocking checks of an earlier run: generation_row refuses
    row = generation_row(
        asdict(plan),
        datetime.now(UTC).isoformat(timespec="seconds"),
        gen_table(lake, "release_gates", plan),
        collect_metrics({t: gen_table(lake, t, plan) for t in METRICS_TABLES}),
        inputs,
        checkpoints | {stage: str(root / stage) for stage in ("sft", "dpo", "grpo")},
    )
    frame = pl.DataFrame([row], schema=GENERATIONS)
    path = lake.write("generations", Partition.generation(plan.generation), frame)
    lake.refresh_catalog()
    ab = json.loads(row["metrics"]).get("ab") or {}
    return dg.MaterializeResult(
        metadata={
            **table_metadata(frame, GENERATIONS),
            "generation": plan.generation,
            "parent": plan.parent,
            "released": row["released"],
            "blocked_by": ", ".join(row["blocked_by"]) or "-",
            "gate": row["gate"],
            "ab_verdict": (row["ab_verdict"] or "not A/B tested") + (" (simulated)" if ab.get("simulated") else ""),
            "inputs": dg.MetadataValue.json(inputs),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    deps=["generation_record"],
    group_name=GROUP_RELEASE,
    kinds={"html"},
    description="One offline HTML page over every recorded generation (released and blocked): the run chart of win "
    "rates per slice against the 0.65 ceiling, held-out instruction-following and violation rates, A/B lifts with "
    "CIs and artifact rates (also inline as metadata), and each generation's lineage.",
)
def generation_report(context: dg.AssetExecutionContext, settings: FlywheelSettings, release: ReleaseSettings):
    files = write_generation_report(
        recorded_generations(settings.lake()),
        settings.reports_dir / "generations",
        GenerationReportConfig(
            win_rate_warn=release.win_rate_warn,
            win_rate_ceiling=release.win_rate_error,
            min_decided_gates=release.min_decided_gates,
        ),
    )
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(files.index.resolve())),
            "summary": dg.MetadataValue.md(files.markdown),
            "generations": files.generations,
            "charts": dg.MetadataValue.json(files.plots),
            # the run chart inline, so the asset page shows the plots without opening the report
            **{f"chart/{name}": dg.MetadataValue.md(f"![{name}]({uri})") for name, uri in files.charts.items()},
        }
    )


RELEASE_ASSETS = [offline_eval, ab_readout, generation_record, generation_report]
RELEASE_RESOURCES = {"release": ReleaseSettings(), "ab": AbSettings()}
