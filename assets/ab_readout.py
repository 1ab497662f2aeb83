"""The A/B readout asset: the online test of the new generation (treatment) against its parent (control).

By default (`source = users`) simulated users act on an engagement model's scores of both arms' replies to
the held-out conversations that offline_eval replayed (`evaluation.simulated_ab`), so the readout moves
with the models; the model learnt from the training users of every curated day up to the window (a backbone
unlike the reward models'), never from the held-out users it is validated on or the conversations it replays.
With `source = simulate` the logs carry a planted lift (`evaluation.ab_simulator`); with `source = lake` it
reads the `ab_exposures` / `ab_events` tables you loaded. Whatever the source, a planted-lift experiment is
read out too, as the readout's own calibration check. Every simulated output says so.

A readout simulated from a model states that model's evidence (training users and turns, held-out AUC, refits
on resampled users behind its interval); below its minimum of training users the verdict is `insufficient`.
"""

import dagster as dg
import polars as pl

from assets.curation import CurationSettings
from assets.generation import (
    GROUP_RELEASE,
    GenerationPlan,
    GenerationSettings,
    current_plan,
    run_seed,
    write_generation_table,
)
from assets.metadata import preview_table, schema_metadata
from assets.resources import AbSettings, FlywheelSettings
from assets.tables import gen_table, write_drops
from evaluation import ab_test, simulated_ab, user_simulator
from evaluation.ab_simulator import simulate_ab_logs
from evaluation.offline_eval import SLICES
from evaluation.record import json_document
from pipeline.judge_data import JudgeDataConfig, time_ordered_split
from pipeline.lake import Lake
from training.generation_plan import read_history

CALIBRATION = "readout_calibration"


def _lake_logs(lake: Lake, plan: GenerationPlan) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The loaded logs: this generation's partition when there is one, else every partition; rows the
    simulator wrote (`simulated`) never count as real traffic."""
    out = []
    for table in ("ab_exposures", "ab_events"):
        if not lake.exists(table):
            raise ValueError(
                f"ab source is `lake` but the lake has no `{table}` table: load your logs into it "
                "(see evaluation/ab_test.py for the columns) or set `source` to simulate"
            )
        frame = gen_table(lake, table, plan)
        frame = frame if frame.height else lake.scan(table).collect()
        if "simulated" in frame.columns:
            frame = frame.filter(~pl.col("simulated").fill_null(False))
        out.append(frame)
    return out[0], out[1]


def simulate_from_users(
    lake: Lake,
    plan: GenerationPlan,
    ab: AbSettings,
    curation: CurationSettings,
    seed: int = 0,
    judge: JudgeDataConfig | None = None,
) -> tuple[simulated_ab.SimulatedReadout, dict]:
    """The readout of simulated users acting on the engagement model's scores of both arms' eval replies."""
    responses = gen_table(lake, "eval_responses", plan)
    if responses.is_empty():
        raise ValueError(f"{plan.generation} has no eval_responses: materialize offline_eval first")
    responses = responses.filter(pl.col("slice").is_in(SLICES))
    # every deduped served turn up to the window's end, not the sampled pool: a 2-day pool holds a few dozen
    # users; the training users of every earlier day teach it, the window's held-out users validate it
    judge = judge or JudgeDataConfig()
    turns = read_history(lake, "unique_prompts", plan, judge.max_earlier_days)
    if turns.is_empty():
        turns = read_history(lake, "prompts", plan, judge.max_earlier_days).drop("split", strict=False)
    rows = time_ordered_split(turns, plan.day_dates, curation.sampling_config(), judge)
    # the eval prompts come from the deduped turns (of the window, or pooled from earlier days' held-out users)
    replayed = turns.filter(pl.col("prompt_id").is_in(responses["prompt_id"].unique().implode()))
    simulator, counters = user_simulator.fit_user_simulator(
        user_simulator.turns_from_prompts(rows.train),
        excluded_users=sorted(rows.held_out_users),
        excluded_conversations=replayed["conversation_id"].unique().to_list(),
        config=user_simulator.UserSimulatorConfig(
            min_rows=ab.simulator_min_rows,
            min_users=ab.min_simulator_users,
            refits=ab.simulator_refits,
            seed=seed,
        ),
        validation=user_simulator.turns_from_prompts(rows.validation),
    )
    replies = simulated_ab.ArmReplies.from_responses(responses, plan.parent, plan.generation)
    experiment = ab.sim_config(plan.days[-1], seed=run_seed(plan, seed), cls=simulated_ab.SimulatedAbConfig)
    analysis = ab.ab_config(start=experiment.start, seed=seed)
    out = simulated_ab.simulated_readout(simulator, replies, experiment, analysis)
    summary = {k: v for k, v in simulator.summary.items() if k != "data_sha256"}
    return out, {**counters, **summary, "training_data": rows.counters}


def calibration(ab: AbSettings, plan: GenerationPlan, seed: int = 0) -> tuple[bool, dict]:
    """The planted-lift experiment read out by the same code: passes when each planted lift lies inside the
    delta-method interval (at 95%, about 1 seed in 20 misses one by chance)."""
    sim = ab.planted_config(plan.days[-1], seed=run_seed(plan, seed))
    exposures, events = simulate_ab_logs(sim)
    readout = ab_test.ab_readout(exposures, events, ab.ab_config(start=sim.start, seed=seed))
    truth, rows = sim.truth(), ab_test.lifts_by_metric(readout)
    found = {
        m: {"planted": truth[m], "lift": rows[m]["lift"], "ci": [rows[m]["delta_ci_low"], rows[m]["delta_ci_high"]]}
        for m in truth
    }
    inside = all(r["ci"][0] is not None and r["ci"][0] <= r["planted"] <= r["ci"][1] for r in found.values())
    return inside, found


@dg.asset(
    deps=["offline_eval"],
    group_name=GROUP_RELEASE,
    kinds={"duckdb", "parquet"},
    metadata=schema_metadata(
        ab_test.LIFTS,
        source=pl.Utf8,
        simulated=pl.Boolean,
        simulated_from=pl.Utf8,
        evidence=pl.Utf8,
        verdict=pl.Utf8,
        reason=pl.Utf8,
        generation=pl.Utf8,
    ),
    description="Online A/B readout of the new generation (treatment) against its parent (control) over a 7-day "
    "window: breadth and depth per arm, lifts with delta-method and bootstrap 95% CIs, p-values, the SRM test and "
    "a verdict. Default source: SIMULATED users acting on an engagement model's scores of both arms' eval "
    "replies (an engagement model of its own backbone, validated on the window's held-out users).",
    check_specs=[
        dg.AssetCheckSpec(
            "sample_ratio",
            asset="ab_readout",
            blocking=True,
            description="Exposed users per arm match the planned split (chi-square SRM test).",
        ),
        dg.AssetCheckSpec(
            CALIBRATION,
            asset="ab_readout",
            description="The same readout recovers the lifts planted in a simulated experiment (warns only).",
        ),
    ],
)
def ab_readout(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    ab: AbSettings,
    curation: CurationSettings,
    generation: GenerationSettings,
):
    plan, lake, seed = current_plan(settings), settings.lake(), generation.seed
    config, simulated = ab.ab_config(seed=seed), ab.source != "lake"
    simulator, extra, evidence = None, {}, {}
    short = None
    if ab.source == "users":
        try:
            out, sim_summary = simulate_from_users(lake, plan, ab, curation, seed, generation.judge_data_config())
        except user_simulator.TooFewTurns as error:
            short = error
    if short is not None:
        # traffic too thin to train the simulator gives no readout: insufficient evidence, and the generation is
        # recorded on its gates alone
        context.log.warning(f"A/B readout not simulated: {short}")
        evidence, simulated = short.evidence(), False
        readout = simulated_ab.no_readout(config)
        exposures, events = None, None
        extra = {"simulator": dg.MetadataValue.json({**short.counters, **evidence})}
    elif ab.source == "users":
        exposures, events, readout, simulator = out.exposures, out.events, out.readout, out.model
        evidence = out.evidence
        write_generation_table(lake, "ab_sim_scores", plan, out.scores)
        extra = {
            "simulator": dg.MetadataValue.json(sim_summary),
            "evidence": dg.MetadataValue.json(evidence),
            "expected_lifts": dg.MetadataValue.json(out.expected),
            "mean_p_continue": dg.MetadataValue.json(
                {
                    "control": float(out.scores["p_continue_control"].mean()),
                    "treatment": float(out.scores["p_continue_treatment"].mean()),
                }
            ),
        }
    elif ab.source == "simulate":
        sim = ab.planted_config(plan.days[-1], seed=run_seed(plan, seed))
        exposures, events = simulate_ab_logs(sim)
        config = ab.ab_config(start=sim.start, seed=seed)
        readout = ab_test.ab_readout(exposures, events, config)
    else:
        exposures, events = _lake_logs(lake, plan)
        readout = ab_test.ab_readout(exposures, events, config)
    if simulated:
        for table, frame in (("ab_exposures", exposures), ("ab_events", events)):
            write_generation_table(lake, table, plan, frame.with_columns(pl.lit(True).alias("simulated")))
    if not evidence:  # logged or planted experiments: the users each arm's estimate rests on
        evidence = {"users_per_arm": dict(zip(readout.arms["arm"], readout.arms["users"]))}
    lacking = f"the user simulator {evidence['reason']}" if evidence.get("sufficient") is False else None
    verdict, reason = ab_test.ab_decision(readout.lifts, readout.srm, insufficient=lacking)
    label = (
        pl.lit(ab.source).alias("source"),
        pl.lit(simulated).alias("simulated"),
        pl.lit(f"simulated from {simulator}" if simulator else None, pl.Utf8).alias("simulated_from"),
        pl.lit(json_document(evidence) if evidence else None, pl.Utf8).alias("evidence"),
    )
    lifts = readout.lifts.with_columns(*label, pl.lit(verdict).alias("verdict"), pl.lit(reason).alias("reason"))
    write_generation_table(lake, "ab_lifts", plan, lifts)
    arms = readout.arms.with_columns(*label, pl.Series("model", [plan.parent, plan.generation]))
    write_generation_table(lake, "ab_arms", plan, arms)
    write_generation_table(lake, "ab_srm", plan, readout.srm.with_columns(*label))
    write_drops(lake, plan, "ab_readout", readout.drops)
    srm = readout.srm.row(0, named=True)
    meta = {
        "generation": plan.generation,
        "source": ab.describe_source(simulator),
        "simulated": simulated,
        "verdict": verdict,
        "verdict_reason": reason,
        "arms": preview_table(arms.with_columns(pl.col("breadth", "depth").round(4))),
        "lifts": preview_table(lifts.drop("reason", "evidence").with_columns(pl.col(pl.Float64).round(4)), 10),
        "srm_p_value": float(srm["p_value"]) if srm["p_value"] is not None else float("nan"),
        "observed_treatment_share": float(srm["observed_treatment_share"] or 0.0),
        "counters": dg.MetadataValue.json(readout.counters),
    }
    for r in readout.lifts.filter(pl.col("lift").is_not_null()).iter_rows(named=True):
        meta[f"lift/{r['metric']}"] = float(r["lift"])
    yield dg.MaterializeResult(metadata={**meta, **extra})
    calibrated, found = calibration(ab, plan, seed)
    yield dg.AssetCheckResult(
        asset_key="ab_readout",
        check_name=CALIBRATION,
        passed=calibrated,
        severity=dg.AssetCheckSeverity.WARN,
        description="planted lifts "
        + ("inside" if calibrated else "NOT inside")
        + " the readout's 95% intervals: "
        + ", ".join(f"{m} {r['planted']:+.1%} -> {r['lift']:+.1%}" for m, r in found.items()),
        metadata={"lifts": dg.MetadataValue.json(found)},
    )
    yield dg.AssetCheckResult(
        asset_key="ab_readout",
        check_name="sample_ratio",
        passed=not srm["srm"],
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"chi-square p = {srm['p_value']:.3g} (flagged below {config.srm_alpha}): observed treatment "
            f"share {srm['observed_treatment_share']} vs planned {srm['planned_treatment_share']}"
        ),
        metadata={"n_control": int(srm["n_control"]), "n_treatment": int(srm["n_treatment"])},
    )
