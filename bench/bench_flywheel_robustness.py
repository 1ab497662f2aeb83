"""Benchmark: does the flywheel turn the same way when only the models' seed changes?

Another machine's rounding moves a training trajectory a little; another seed moves it more. This runs the
default flywheel (`python -m assets.flywheel`, as `make flywheel` does) once per seed, each in a fresh
FLYWHEEL_HOME and DAGSTER_HOME. The replayed days are consolidated once (`--consolidate-only`: the consolidation
never depends on the models' seed) and every run starts from a copy of that home. It prints for every run:
- each generation's verdict per release gate (pass, warn, fail, or insufficient evidence) and the A/B verdict;
- which generations were released and built upon (released, not rejected by the A/B readout, and decided better
  than their parent: `training.generation_plan.built_upon`);
- the held-out instruction-following gain of the last generation built upon over gen-0, with its interval, on the
  held-out cards the gates read and on the test cards no decision reads.

- per generation, each card rule's violation rate on the held-out cards, new against parent, as the steerability
  gate read it (a rule risen beyond its tolerance with its interval above 0 is forgotten).

It ends with the robustness targets, counted over the runs:
- runs with a chain of at least 2 generations built upon, each beating its parent's held-out following (the gate
  split) with its paired interval above 0;
- runs whose last generation built upon beats gen-0 on the test cards by at least `--min-test-gain`, with its
  interval above 0;
- runs where no generation built upon forgot a rule;
- runs where the steerability, artifact and train/eval gates always had the evidence to decide.

    .venv/bin/python bench/bench_flywheel_robustness.py                    # seeds 0 1 2 3, 3 generations
    .venv/bin/python bench/bench_flywheel_robustness.py --seeds 0 1 --generations 1 --window-days 1

The default run is one consolidation and four flywheels' generations, one after another (each pre-trains its
own gen-0, whose seed differs). The
figures go to stdout and bench/out/bench_flywheel_robustness.json; each run's terminal output is kept
beside it (`bench/out/robustness-seed<n>.log`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402

from assets.flywheel import heldout_progress  # noqa: E402
from assets.generation import BASE  # noqa: E402
from assets.resources import FlywheelSettings  # noqa: E402
from evaluation.comparison import TEST_STAGE  # noqa: E402
from evaluation.gate_config import GateConfig  # noqa: E402
from pipeline.lake import Partition  # noqa: E402
from training.generation_plan import built_upon  # noqa: E402
from training.policy.steer_data import REPAIRED  # noqa: E402

OUT = REPO / "bench" / "out"
# the gates whose evidence never depends on how many users a window has: they must always decide
ALWAYS_DECIDED = ("steerability_regression", "artifact_drift", "train_eval_disjoint")


def flywheel(home: Path, dagster_home: Path, args: list[str], log: Path) -> tuple[int, float]:
    """`python -m assets.flywheel ARGS` in the given homes, its terminal output in `log`: (exit code, seconds)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as f:
        command = [sys.executable, "-m", "assets.flywheel", *args]
        rc = subprocess.run(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    return rc, time.perf_counter() - started


def consolidate_once(flywheel_args: list[str], workdir: Path, reuse: Path | None = None) -> tuple[Path, float]:
    """The replayed days every run needs, consolidated once: the consolidation never depends on the models'
    seed, so each run starts from a copy of this home and pays only for its generations. `reuse` is a home an
    earlier bench consolidated with the same arguments (`--keep` prints it): it is completed, not redone."""
    home = workdir / "consolidated"
    if reuse is not None:
        shutil.copytree(reuse, home)
    rc, wall = flywheel(
        home,
        workdir / "dagster-consolidated",
        [*flywheel_args, "--consolidate-only"],
        OUT / "robustness-consolidation.log",
    )
    if rc != 0:
        raise SystemExit(f"consolidation failed (exit {rc}): see bench/out/robustness-consolidation.log")
    return home, wall


def run_seed(seed: int, flywheel_args: list[str], workdir: Path, consolidated: Path) -> dict:
    """One whole flywheel in its own homes, from a copy of the consolidated one; returns its generations, their
    gate verdicts and the held-out gain."""
    home = workdir / f"home-{seed}"
    shutil.copytree(consolidated, home)
    log = OUT / f"robustness-seed{seed}.log"
    rc, wall = flywheel(home, workdir / f"dagster-{seed}", [*flywheel_args, "--seed", str(seed)], log)
    return {
        "seed": seed,
        "returncode": rc,
        "wall_s": round(wall, 1),
        "log": str(log.relative_to(REPO)),
        **read_run(home),
    }


def read_run(home: Path) -> dict:
    """What a flywheel home recorded: its generations, their gate verdicts and the held-out and test-card gains
    (also for a home an earlier run kept: `python bench/bench_flywheel_robustness.py --read HOME`)."""
    settings = FlywheelSettings(home=str(home))
    lake = settings.lake()
    frame = lake.scan("generations").collect().sort("number") if lake.exists("generations") else pl.DataFrame()
    rows = []
    for r in frame.iter_rows(named=True):
        detail = [g for g in json.loads(r.get("gate_detail") or "[]") if isinstance(g, dict)]
        gates = {g.get("gate"): g.get("outcome") or g.get("severity") for g in detail}
        steer = next((g for g in detail if g.get("gate") == "steerability_regression"), {})
        rows.append(
            {
                "generation": r["generation"],
                "parent": r.get("parent"),
                "released": bool(r.get("released")),
                "ab_verdict": r.get("ab_verdict"),
                "gates": gates,
                "steer_if_heldout": r.get("steer_if_heldout"),
                "improvement": json.loads(r.get("metrics") or "{}").get("improvement"),
                "rules": steer.get("rules") or [],
            }
        )
    # built upon: released, not rejected by its A/B readout and decided better than its parent (the last generation
    # of a run has no child to show it, so the rule itself decides)
    kept = dict(zip(frame["generation"], built_upon(frame))) if frame.height else {}
    for row in rows:
        row["built_upon"] = bool(kept.get(row["generation"]))
    fluency = fluency_against_gen0(lake, rows) if rows else {}
    for row in rows:
        row["fluency"] = fluency.get(row["generation"])
        row["length"] = length_record(lake, home, row["generation"])
        row["rule_data"] = rule_data(lake, home, row["generation"])
    return {
        "generations": rows,
        "heldout": heldout_progress(settings) if rows else None,
        # the test cards, which no gate or choice of parent reads: the gain no decision selected for
        "test": heldout_progress(settings, TEST_STAGE) if rows else None,
    }


def rule_data(lake, home: Path, generation: str) -> dict:
    """What the generation had to learn its training cards' rules from: the sampled replies to them, how many kept
    every rule, how many more a change of form repaired (`engine.rule_repair`), and the distinct rule-keeping
    replies the SFT set could use and used."""
    out: dict = {}
    if lake.exists("candidates"):
        cands = lake.read("candidates", Partition.generation(generation))
        if "rules_kept" in cands.columns:
            cards = cands.filter(pl.col("rules_kept").is_not_null())
            repaired = cards["generator"].str.ends_with(REPAIRED)
            out["sampled"] = int((~repaired).sum())
            out["kept"] = int(cards.filter(~repaired)["rules_kept"].sum())
            out["repaired"] = int(repaired.sum())
            # per training card: sampled replies that kept every rule (a card at 0 gives nothing to learn from)
            per_card = cards.filter(~repaired).group_by(pl.col("prompt_id").str.split(":").list.get(1).alias("card"))
            out["kept_by_card"] = dict(per_card.agg(pl.col("rules_kept").sum()).sort("card").iter_rows())
    manifest = home / "models" / generation / "datasets" / "sft" / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        out["sft_available"] = (m.get("available_by_source") or {}).get("steerability")
        out["sft_rows"] = (m.get("rows_by_source") or {}).get("steerability")
    return out


def length_record(lake, home: Path, generation: str) -> dict:
    """What the artifact gate compared (mean characters and words of the held-out replies, parent and new) and
    the length the generation's training sets would teach: per source, the relative difference of the SFT
    targets' mean characters from their prompts' candidates' and of the chosen replies' from the rejected ones',
    before and after the length balance (`training.rewards.length_bias`)."""
    out: dict = {}
    if lake.exists("eval_style"):
        style = lake.read("eval_style", Partition.generation(generation))
        for r in style.iter_rows(named=True):
            out[r["role"]] = {"chars": r["mean_chars"], "words": r["mean_words"]}
    for kind in ("sft", "preference"):
        manifest = home / "models" / generation / "datasets" / kind / "manifest.json"
        if manifest.is_file():
            out[kind] = json.loads(manifest.read_text()).get("length_shift_by_source")
    return out


def fluency_against_gen0(lake, rows: list[dict], resamples: int = 2000) -> dict[str, dict]:
    """Each generation's mean SLOR (`evaluation.fluency`) on its held-out replies against gen-0's, all scored
    with one unigram table, counted on every served reply of the run's curated pool, so the means compare
    across generations (each evaluation's own gate counts the unigram on its prompts' served replies, which
    is exact within it and only rough across windows). gen-0's replies are those it gave as gen-1's parent;
    the two sets answer different prompts, so the interval resamples prompts on each side independently."""
    import numpy as np

    from evaluation import fluency

    try:
        scorer = fluency.load_scorer(fluency.FluencyConfig())
    except fluency.MissingReferenceModel as e:
        return {r["generation"]: {"reason": str(e)} for r in rows}
    served = lake.scan("prompts").select("served_response").collect()["served_response"].drop_nulls().to_list()
    unigram = fluency.Unigram.from_texts(served, scorer)

    def replies(generation: str, policy: str) -> np.ndarray:
        frame = lake.read("eval_responses", Partition.generation(generation)).filter(
            (pl.col("policy") == policy) & pl.col("slice").is_in(["eval_internal", "eval_user"])
        )
        scores = fluency.score_replies(frame["response"].fill_null("").to_list(), scorer, unigram)
        return scores["slor"].drop_nulls().to_numpy()

    base = replies(rows[0]["generation"], BASE)
    rng = np.random.default_rng(0)
    out = {BASE: {"mean_slor": float(base.mean()), "n": int(base.size)}}
    for r in rows:
        new = replies(r["generation"], r["generation"])
        draws = [rng.choice(new, new.size).mean() - rng.choice(base, base.size).mean() for _ in range(resamples)]
        low, high = np.quantile(draws, [0.025, 0.975])
        out[r["generation"]] = {
            "mean_slor": float(new.mean()),
            "n": int(new.size),
            "minus_gen0": float(new.mean() - base.mean()),
            "ci_low": float(low),
            "ci_high": float(high),
        }
    return out


def forgotten(rules: list[dict], tolerance: float = GateConfig().steerability_tolerance) -> list[str]:
    """The rules whose violation rate rose beyond the tolerance with the paired interval above 0."""
    return [r["rule"] for r in rules if r.get("rise", 0) > tolerance and (r.get("ci_low") or 0) > 0]


def chain(rows: list[dict]) -> list[dict]:
    """The generations built upon, from gen-0's first child to the last one built upon (each one's parent is the
    one before it)."""
    by_name = {r["generation"]: r for r in rows}
    kept = [r for r in rows if r["built_upon"]]
    out = []
    node = kept[-1] if kept else None
    while node is not None:
        out.append(node)
        node = by_name.get(node["parent"])
    return out[::-1]


def targets(run: dict, min_test_gain: float) -> dict:
    rows = run["generations"]
    better = [r for r in chain(rows) if ((r.get("improvement") or {}).get("following") or {}).get("ci_low", 0) > 0]
    test = run.get("test") or {}
    decided = all(
        r["gates"].get(g) not in (None, "insufficient") for r in rows for g in ALWAYS_DECIDED if g in r["gates"]
    )
    released = [r for r in rows if r["released"]]
    return {
        "chain_better_on_gate_cards": len(better),
        "chain_met": len(better) >= 2,
        "test_gain_met": bool(test) and test["difference"] >= min_test_gain and test["ci_low"] > 0,
        "no_rule_forgotten": not any(forgotten(r["rules"]) for r in rows if r["built_upon"]),
        "fixed_gates_decided": decided,
        # "at least gen-0's": no released generation's fluency is below gen-0's with its interval under 0
        "fluency_kept": all(
            (r.get("fluency") or {}).get("ci_high", 0.0) >= 0 and "reason" not in (r.get("fluency") or {})
            for r in released
        ),
    }


def print_run(run: dict, verdict: dict) -> None:
    if "seed" in run:
        print(f"\n== seed {run['seed']}: exit {run['returncode']}, {run['wall_s']:.0f}s (log {run['log']})")
    for r in run["generations"]:
        status = "released" if r["released"] else "blocked"
        status += ", built upon" if r["built_upon"] else ""
        gates = ", ".join(f"{g} {v}" for g, v in r["gates"].items())
        print(f"  {r['generation']} (parent {r['parent']}): {status}; A/B {r['ab_verdict'] or '-'}")
        print(f"    {gates}")
        following = (r.get("improvement") or {}).get("following")
        if following:
            print(
                f"    held-out following {following['parent']:.3f} -> {following['new']:.3f}, "
                f"{following['difference']:+.3f} (95% CI {following['ci_low']:+.3f} .. {following['ci_high']:+.3f})"
            )
        if r["rules"]:
            rates = ", ".join(
                f"{x['rule']} {x['parent']:.2f}->{x['new']:.2f}" for x in r["rules"] if x["new"] or x["parent"]
            )
            lost = forgotten(r["rules"])
            print(f"    violation rate per rule, parent -> new: {rates}" + (f"; forgotten: {lost}" if lost else ""))
        data = r.get("rule_data") or {}
        if "sampled" in data:
            print(
                f"    training cards: {data['kept']} of {data['sampled']} sampled replies kept every rule, "
                f"{data['repaired']} more repaired; SFT rule-keeping rows {data.get('sft_rows')} "
                f"({data.get('sft_available')} distinct available)"
            )
            print(
                "    sampled rule-keepers per card: " + ", ".join(f"{k} {v}" for k, v in data["kept_by_card"].items())
            )
        f = r.get("fluency") or {}
        if "mean_slor" in f:
            print(
                f"    fluency {f['mean_slor']:.3f} nats/token, {f['minus_gen0']:+.3f} against {BASE}'s "
                f"(95% CI {f['ci_low']:+.3f} .. {f['ci_high']:+.3f})"
            )
        elif f:
            print(f"    fluency not measured: {f['reason']}")
        length = r.get("length") or {}
        if "new" in length and "parent" in length:
            a, b = length["parent"]["chars"], length["new"]["chars"]
            print(
                f"    mean reply {a:.1f} -> {b:.1f} characters ({(b - a) / a:+.1%}), words {length['parent']['words']:.1f} -> {length['new']['words']:.1f}"
            )
        for kind in ("sft", "preference"):
            shifts = length.get(kind) or {}
            if shifts:
                parts = ", ".join(
                    f"{s} {v['before']:+.2f} -> {v['after']:+.2f}{' (exempt)' if v.get('exempt') else ''}"
                    for s, v in shifts.items()
                )
                print(f"    {kind} length shift by source, before -> after the balance: {parts}")
    gain = run["heldout"]
    if gain:
        print(
            f"  held-out following {BASE} -> {gain['generation']}: {gain['base']:.3f} -> {gain['new']:.3f}, "
            f"{gain['difference']:+.3f} (95% CI {gain['ci_low']:+.3f} .. {gain['ci_high']:+.3f})"
        )
    else:
        print("  no generation built upon: no held-out gain")
    test = run.get("test")
    if test:
        print(
            f"  test-card following {BASE} -> {test['generation']}: {test['base']:.3f} -> {test['new']:.3f}, "
            f"{test['difference']:+.3f} (95% CI {test['ci_low']:+.3f} .. {test['ci_high']:+.3f})"
        )
    print(f"  targets: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--window-days", type=int, default=2)
    parser.add_argument("--history-days", type=int, default=4, help="as `python -m assets.flywheel --history-days`")
    parser.add_argument(
        "--min-test-gain", type=float, default=0.20, help="test-card following gain over gen-0 the target asks for"
    )
    parser.add_argument("--keep", action="store_true", help="keep the runs' homes (printed) instead of removing them")
    parser.add_argument(
        "--consolidated", type=Path, default=None, help="a consolidated home an earlier `--keep` run left, to reuse"
    )
    parser.add_argument("--read", type=Path, default=None, help="only print what a kept flywheel home recorded")
    args = parser.parse_args(argv)
    if args.read is not None:
        run = read_run(args.read)
        print_run(run, targets(run, args.min_test_gain))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-robustness-"))
    runs = []
    flywheel_args = ["--generations", str(args.generations), "--window-days", str(args.window_days)]
    flywheel_args += ["--history-days", str(args.history_days)]
    try:
        consolidated, setup = consolidate_once(flywheel_args, workdir, args.consolidated)
        print(f"consolidation, once for every run: {setup:.0f}s")
        for seed in args.seeds:
            run = run_seed(seed, flywheel_args, workdir, consolidated)
            run["targets"] = targets(run, args.min_test_gain)
            print_run(run, run["targets"])
            runs.append(run)
    finally:
        if args.keep:
            print(f"\nhomes kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    count = {k: sum(bool(r["targets"][k]) for r in runs) for k in runs[0]["targets"]} if runs else {}
    n = len(runs)
    print(
        f"\nruns with a chain of >= 2 generations built upon, each better than its parent on the held-out cards "
        f"(interval above 0): {count.get('chain_met', 0)} of {n}; runs whose last generation built upon beats "
        f"{BASE} on the test cards by >= {args.min_test_gain} (interval above 0): {count.get('test_gain_met', 0)} of "
        f"{n}; runs where no generation built upon forgot a rule: {count.get('no_rule_forgotten', 0)} of {n}; runs "
        f"whose steerability, artifact and train/eval gates always decided: {count.get('fixed_gates_decided', 0)} of "
        f"{n}; runs whose released generations are no less fluent than {BASE}: {count.get('fluency_kept', 0)} of {n}"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_flywheel_robustness.json").write_text(json.dumps(runs, indent=2, default=str))
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
