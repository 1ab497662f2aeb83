"""The A/B readout asset: the online test of the new generation (treatment) against its parent (control).

By default the logs are simulated with a planted lift (`evaluation.ab_simulator`) and every output says so;
with `source = lake` it reads the `ab_exposures` / `ab_events` tables you loaded.
"""

import dagster as dg
import polars as pl

from assets.generation import GROUP_RELEASE, GenerationPlan, current_plan, write_generation_table
from assets.metadata import preview_table
from assets.resources import AbSettings, FlywheelSettings
from assets.tables import gen_table, write_drops
from evaluation import ab_test
from evaluation.ab_simulator import simulate_ab_logs
from pipeline.lake import Lake


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


@dg.asset(
    deps=["offline_eval"],
    group_name=GROUP_RELEASE,
    kinds={"duckdb", "parquet"},
    description="Online A/B readout of the new generation (treatment) against its parent (control) over a 7-day "
    "window: breadth and depth per arm, lifts with delta-method and bootstrap 95% CIs, p-values, the SRM test and "
    "a verdict. Default source: SIMULATED logs with a planted lift.",
    check_specs=[
        dg.AssetCheckSpec(
            "sample_ratio",
            asset="ab_readout",
            blocking=True,
            description="Exposed users per arm match the planned split (chi-square SRM test).",
        )
    ],
)
def ab_readout(context: dg.AssetExecutionContext, settings: FlywheelSettings, ab: AbSettings):
    plan, lake = current_plan(settings), settings.lake()
    config, simulated = ab.ab_config(), ab.source == "simulate"
    if simulated:
        sim = ab.sim_config(plan.days[-1], seed=plan.number)
        exposures, events = simulate_ab_logs(sim)
        for table, frame in (("ab_exposures", exposures), ("ab_events", events)):
            write_generation_table(lake, table, plan, frame.with_columns(pl.lit(True).alias("simulated")))
        config = ab.ab_config(start=sim.start)
    else:
        exposures, events = _lake_logs(lake, plan)
    readout = ab_test.ab_readout(exposures, events, config)
    verdict, reason = ab_test.ab_decision(readout.lifts, readout.srm)
    label = pl.lit(ab.source).alias("source"), pl.lit(simulated).alias("simulated")
    lifts = readout.lifts.with_columns(*label, pl.lit(verdict).alias("verdict"), pl.lit(reason).alias("reason"))
    write_generation_table(lake, "ab_lifts", plan, lifts)
    arms = readout.arms.with_columns(*label, pl.Series("model", [plan.parent, plan.generation]))
    write_generation_table(lake, "ab_arms", plan, arms)
    write_generation_table(lake, "ab_srm", plan, readout.srm.with_columns(*label))
    write_drops(lake, plan, "ab_readout", readout.drops)
    srm = readout.srm.row(0, named=True)
    meta = {
        "generation": plan.generation,
        "source": ab.describe_source(),
        "simulated": simulated,
        "verdict": verdict,
        "verdict_reason": reason,
        "arms": preview_table(arms.with_columns(pl.col("breadth", "depth").round(4))),
        "lifts": preview_table(lifts.drop("reason").with_columns(pl.col(pl.Float64).round(4)), 10),
        "srm_p_value": float(srm["p_value"]) if srm["p_value"] is not None else float("nan"),
        "observed_treatment_share": float(srm["observed_treatment_share"] or 0.0),
        "counters": dg.MetadataValue.json(readout.counters),
    }
    for r in readout.lifts.filter(pl.col("lift").is_not_null()).iter_rows(named=True):
        meta[f"lift/{r['metric']}"] = float(r["lift"])
    yield dg.MaterializeResult(metadata=meta)
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
