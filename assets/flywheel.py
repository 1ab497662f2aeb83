"""`make flywheel`: several generations in a row, each on its own window of days, each built on the last
released one.

    python -m assets.flywheel                       # 3 generations, 2 days each, after 4 days of history
    python -m assets.flywheel --generations 2 --window-days 1 --history-days 0

The flywheel turns until `--generations` generations are recorded in FLYWHEEL_HOME: it consolidates the
replayed days of the next window (days already in the lake are kept: that is the set-up a re-run skips),
then generation k learns from the k-th window of days, is evaluated against its parent on the
held-out checks, gated, A/B-read and recorded. A generation its release gates block is recorded as
blocked (never built upon), and the next one starts again from the last generation built upon (released and
decided better than its parent; `training.generation_plan.built_upon`). A run that
was killed part-way is finished by running the command again: the generation in progress is redone under
the same name (its checkpoints are only ever renamed into place whole), then the rest follow.

The terminal gets one line per step with its time; Dagster's own event log stays in the instance
(`make ui`). The command ends with one table, a row per generation, and the path of the generations report.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import torch

from assets.progress import ProgressView, quiet_libraries
from assets.resources import FlywheelSettings
from evaluation import evidence, steerability
from evaluation.comparison import TEST_STAGE
from evaluation.generations_table import fluency_of, following_on_test_cards, ifeval_of
from pipeline.sources import available_days
from training.generation_plan import BASE, built_upon, last_built_upon, windows
from training.policy import smollm2

DEFAULT_GENERATIONS = 3
DEFAULT_WINDOW_DAYS = 2
# Replayed days consolidated before the first window, as a deployment has traffic from before its first
# generation: the judges and the user simulator learn from them and the evaluation slices pool their held-out
# users. Without them gen-1's judges, simulator and slices rest on its window alone (the default traffic's
# 2026-01-09 .. 10 hold 26 and 58 users: slices of 2 to 6 held-out users and a simulator of 45).
DEFAULT_HISTORY_DAYS = 4
# The table's columns: the run chart's measures of each recorded generation.
TABLE = (
    "generation",
    "parent",
    "released",
    "blocked_by",
    "insufficient",
    "ab_verdict",
    "steer_if_heldout",
    "steer_violation_heldout",
    "win_rate_user",
    "win_rate_internal",
    "sim_breadth_lift",
    "sim_depth_lift",
)
# the new policy's style on the held-out prompts, which the artifact-drift gate bounds (lengths of the replies that
# ended on their own; cut_off_rate: the share that ran into the token limit)
ARTIFACT_RATES = ("mean_chars", "cut_off_rate", "emoji_rate", "list_rate")
# mean SLOR of the new policy's and its parent's held-out replies (gen-0's shows as gen-1's parent), which the
# fluency gate compares
FLUENCY = {"fluency": "new", "fluency_parent": "parent"}
# following rate of the new policy and its parent on the test cards, which no gate or choice of parent reads: beside
# steer_if_heldout (the cards the gates decide on), a gap between the two shows selection on the gate cards
TEST_CARDS = {"steer_if_test": "new", "steer_if_test_parent": "parent"}
# instruction-strict accuracy of the new policy and its parent on the held-out IFEval prompts (when configured)
IFEVAL = {"ifeval_instr": "new", "ifeval_instr_parent": "parent"}


def generations_table(settings: FlywheelSettings) -> pl.DataFrame:
    """A row per recorded generation: the run chart's measures, its replies' artifact rates and the fluency of its
    and its parent's replies."""
    lake = settings.lake()
    if not lake.exists("generations"):
        return pl.DataFrame()
    frame = lake.scan("generations").collect().sort("number")
    metrics = [json.loads(m or "{}") for m in frame["metrics"]]
    style = [(m.get("style") or {}).get("new") or {} for m in metrics]
    table = frame.select([c for c in TABLE if c in frame.columns])
    if "released" in table.columns:
        # later generations start from it: released, not rejected by its A/B test, and decided better than its parent
        table = table.insert_column(table.columns.index("released") + 1, built_upon(frame))
    return table.with_columns(
        *(pl.Series(k, [s.get(k) for s in style], dtype=pl.Float64) for k in ARTIFACT_RATES),
        *(pl.Series(k, [fluency_of(m, role) for m in metrics], dtype=pl.Float64) for k, role in FLUENCY.items()),
        *(
            pl.Series(k, [following_on_test_cards(m, role) for m in metrics], dtype=pl.Float64)
            for k, role in TEST_CARDS.items()
        ),
        *(
            pl.Series(k, [ifeval_of(m, role) for m in metrics], dtype=pl.Float64)
            for k, role in IFEVAL.items()
            if any(ifeval_of(m, role) is not None for m in metrics)
        ),
    )


def verdict_lines(settings: FlywheelSettings) -> list[str]:
    """One line per recorded generation: each release gate's verdict and the A/B readout's."""
    lake = settings.lake()
    if not lake.exists("generations"):
        return []
    frame = lake.scan("generations").collect().sort("number")
    out = []
    for r in frame.iter_rows(named=True):
        gates = [g for g in json.loads(r.get("gate_detail") or "[]") if isinstance(g, dict)]
        parts = [f"{g.get('gate')} {g.get('outcome') or evidence.outcome(g.get('severity') or '')}" for g in gates]
        if r.get("ab_verdict"):
            parts.append(f"A/B {r['ab_verdict']}")
        # judges the traffic had too little data to train, with their counts (insufficient evidence)
        parts += [v for v in r.get("insufficient") or [] if " judge not trained" in v]
        reason = ((json.loads(r.get("metrics") or "{}") or {}).get("improvement") or {}).get("reason")
        if reason:
            parts.append(reason)
        out.append(f"{r['generation']}: " + (", ".join(parts) or "no gate recorded"))
    return out


def heldout_progress(settings: FlywheelSettings, stage: str = "steerability") -> dict | None:
    """Instruction following of the last generation built upon (the one the next generation builds on: its gates
    passed, its A/B readout did not reject it and it was decided better than its parent) against gen-0, with a
    paired bootstrap interval over the card prompts: the held-out cards the gates read (`stage` 'steerability'), or
    the test cards no decision reads ('steerability_test'); None before one is built upon."""
    lake = settings.lake()
    last = last_built_upon(lake.scan("generations").collect()) if lake.exists("generations") else BASE
    if last == BASE or not lake.exists("eval_records"):
        return None
    records = lake.scan("eval_records").filter(pl.col("metric") == f"{stage}/all_followed").collect()

    def rates(policy: str) -> pl.DataFrame:
        rows = records.filter(pl.col("policy") == policy)
        # every evaluation of a policy answers the same prompts with the same seed: keep its first one
        rows = rows.filter(pl.col("generation") == rows["generation"].min())
        return rows.group_by("prompt_id").agg(pl.col("value").mean())

    base, new = rates(BASE), rates(last)
    if base.is_empty() or new.is_empty():
        return None  # the suite was not answered by both (test cards recorded before they were shipped)
    return {"generation": last, **steerability.following_difference(base, new)}


def print_table(settings: FlywheelSettings) -> None:
    table = generations_table(settings)
    if table.is_empty():
        print("no generation recorded")
        return
    progress = heldout_progress(settings)
    test = heldout_progress(settings, TEST_STAGE)
    lists = [c for c in ("blocked_by", "insufficient") if c in table.columns]
    table = table.with_columns(pl.col(lists).list.join(","), pl.col(pl.Float64).round(3))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=320, tbl_hide_dataframe_shape=True, fmt_str_lengths=60):
        print(table)
    lines = verdict_lines(settings)
    if lines:
        print("verdicts per gate (pass, fail, or insufficient evidence: neither passes nor blocks):")
        print("\n".join(f"  {line}" for line in lines))
    if progress:
        print(
            f"held-out instruction following, {BASE} -> {progress['generation']}: {progress['base']:.3f} -> "
            f"{progress['new']:.3f}, difference {progress['difference']:+.3f} (95% bootstrap CI "
            f"{progress['ci_low']:+.3f} .. {progress['ci_high']:+.3f}, {progress['n_prompts']} held-out prompts)"
        )
    if test:
        print(
            f"test-card instruction following (no decision reads it), {BASE} -> {test['generation']}: "
            f"{test['base']:.3f} -> {test['new']:.3f}, difference {test['difference']:+.3f} (95% bootstrap CI "
            f"{test['ci_low']:+.3f} .. {test['ci_high']:+.3f}, {test['n_prompts']} test prompts)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--generations",
        type=int,
        default=int(os.environ.get("GENERATIONS") or DEFAULT_GENERATIONS),
        help="generations to record in FLYWHEEL_HOME (env GENERATIONS)",
    )
    parser.add_argument("--window-days", type=int, default=DEFAULT_WINDOW_DAYS, help="days of traffic per generation")
    parser.add_argument(
        "--history-days",
        type=int,
        default=DEFAULT_HISTORY_DAYS,
        help="replayed days consolidated before the first window: the judges and the user simulator learn from "
        "them and the evaluation slices pool their held-out users (fewer when the source has fewer)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="one seed for every random choice of the models (env FLYWHEEL_SEED, `make flywheel SEED=n`; default 0)",
    )
    parser.add_argument(
        "--consolidate-only",
        action="store_true",
        help="consolidate the history and every window's days, then stop (a home to copy for runs that differ only "
        "in the models' seed: the consolidation never depends on it)",
    )
    parser.add_argument(
        "--ifeval",
        default=os.environ.get("FLYWHEEL_IFEVAL") or None,
        help="IFEval input JSONL: each generation's evaluation answers its held-out half and the IFEval gate reads it "
        "(env FLYWHEEL_IFEVAL, `make flywheel IFEVAL=path`; default: no IFEval)",
    )
    args = parser.parse_args(argv)
    if args.ifeval and not Path(args.ifeval).is_file():
        parser.error(f"--ifeval {args.ifeval}: no such file (IFEval's input_data.jsonl, or leave it unset)")
    quiet_libraries()
    resources = run_resources(os.environ.get("FLYWHEEL_POLICY"), args.seed, cpu=not torch.cuda.is_available())
    if args.ifeval:
        resources["release"] = {**resources.get("release", {}), "ifeval_path": str(Path(args.ifeval).resolve())}
    return run_flywheel(
        args.generations,
        args.window_days,
        resources=resources or None,
        history_days=args.history_days,
        consolidate_only=args.consolidate_only,
    )


def run_resources(policy: str | None, seed: int | None, *, cpu: bool) -> dict[str, dict]:
    """The resource settings of every run: SmolLM2 takes the sizes of its device (`Smollm2Sizes` on a CPU, where a
    generation of the default sizes would take many hours; `Smollm2GpuSizes` on a GPU), and `seed` sets the one
    seed."""
    resources = smollm2.sizes_for(gpu=not cpu).resources() if policy == smollm2.NAME else {}
    if seed is not None:
        resources["generation"] = {**resources.get("generation", {}), "seed": seed}
    return resources


def _run_config(resources: dict[str, dict], names: tuple[str, ...]) -> dict:
    """Run config carrying the given resources' settings (those a job uses)."""
    return {"resources": {k: {"config": v} for k, v in resources.items() if k in names and v}}


def consolidate(days: list[str], instance: dg.DagsterInstance, resources: dict[str, dict]) -> bool:
    """The daily consolidation job for each day, one line per day."""
    from assets.definitions import defs

    job = defs.resolve_job_def("consolidation")
    for day in days:
        result = ProgressView(steps=False).run(
            job,
            f"consolidation {day}",
            partition_key=day,
            instance=instance,
            # in process one step runs at a time: one worker, with every core (unless the settings say otherwise)
            run_config=_run_config(
                {**resources, "curation": {"workers": 1, **resources.get("curation", {})}}, ("settings", "curation")
            ),
        )
        if not result.success:
            return False
    return True


def run_flywheel(
    generations: int,
    window_days: int,
    instance: dg.DagsterInstance | None = None,
    resources: dict[str, dict] | None = None,
    history_days: int = 0,
    consolidate_only: bool = False,
) -> int:
    """Consolidate what the windows need, then turn until `generations` generations are recorded.

    `resources` (resource name -> settings) overrides the code location's resources for every run, e.g.
    smaller sizes; the default instance is DAGSTER_HOME's, so `make ui` shows the runs. `history_days` replayed
    days before the first window are consolidated first (as many as the source has, up to that number).
    """
    if history_days < 0:
        raise ValueError(f"--history-days must be >= 0, not {history_days}")
    resources = {k: dict(v) for k, v in (resources or {}).items()}
    settings = FlywheelSettings(**resources.get("settings", {}))
    replay = [d.isoformat() for d in available_days(settings.source_config())]
    plan = windows(replay, generations, window_days)
    before = [d for d in replay if d < plan[0][0]]
    history = before[len(before) - min(history_days, len(before)) :]
    if len(history) < history_days:
        print(f"history: the source has {len(before)} days before the first window, not {history_days}")
    # the first consolidated day starts the cross-day dedup history, unless a history start is configured
    curation = resources.setdefault("curation", {})
    if "history_start" not in curation and not os.environ.get("FLYWHEEL_HISTORY_START"):
        curation["history_start"] = (history or plan[0])[0]
    instance = instance or dg.DagsterInstance.get()
    lake = settings.lake()
    started, setup = time.perf_counter(), 0.0
    if consolidate_only:
        todo = [d for d in [*history, *(d for w in plan for d in w)] if not lake.exists("prompts", d)]
        ok = not todo or consolidate(todo, instance, resources)
        print(
            f"consolidated {len(todo)} days in {time.perf_counter() - started:.0f}s" if ok else "consolidation failed"
        )
        return 0 if ok else 1
    while True:
        done = generations_table(settings).height
        if done >= generations:
            break
        window = plan[done]
        # a window's days are consolidated just before its generation, so the first one starts early; the history
        # days come with the first window that finds them missing
        todo = [d for d in [*history, *window] if not lake.exists("prompts", d)]
        t0 = time.perf_counter()
        if todo and not consolidate(todo, instance, resources):
            return 1
        setup += time.perf_counter() - t0
        # the window's own days and no earlier ones: GenerationSettings' default window reaches back a week
        own = {"window_end": window[-1], "window_days": window_days}
        gen_resources = {**resources, "generation": {**resources.get("generation", {}), **own}}
        if not run_one(instance, gen_resources, f"gen-{done + 1} (window {window[0]} .. {window[-1]})"):
            # not a release gate (those record the generation as blocked): a step failed, so the flywheel stops
            # here; running the command again redoes this generation under the same name
            print(f"\ngen-{done + 1} failed (see the lines above); generations recorded so far:")
            print_table(settings)
            return 1
    total = time.perf_counter() - started
    print(f"\n{generations} generations recorded in {total - setup:.0f}s after set-up (consolidation {setup:.0f}s)")
    print_table(settings)
    print(f"\ngenerations report: {(settings.reports_dir / 'generations' / 'index.html').resolve()}")
    return 0


GENERATION_RESOURCES = ("settings", "curation", "generation", "release", "ab")
RECORD = ("generation_record", "generation_report")


def run_one(instance: dg.DagsterInstance, resources: dict[str, dict], label: str) -> bool:
    """One generation, one line per step; a generation its release gates blocked is then recorded as blocked
    (the record and the report alone), so the next one starts from the last generation built upon."""
    from assets.definitions import defs

    view = ProgressView()
    job = defs.resolve_job_def("generation")
    run_config = _run_config(resources, GENERATION_RESOURCES)
    result = view.run(job, label, instance=instance, run_config=run_config)
    if result.success:
        return True
    blocking = [
        c for c in result.get_asset_check_evaluations() if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
    ]
    if not blocking or any(c.asset_key.to_user_string() != "offline_eval" for c in blocking):
        return False  # a failure, not a gate: stop, and a re-run finishes this generation
    gates = ", ".join(sorted(c.check_name for c in blocking))
    recorded = view.run(
        job,
        f"{label} blocked by {gates}: recording it as blocked",
        instance=instance,
        run_config=_run_config(resources, ("settings", "generation", "release")),
        asset_selection=[dg.AssetKey(k) for k in RECORD],
    )
    return recorded.success


if __name__ == "__main__":
    sys.exit(main())
