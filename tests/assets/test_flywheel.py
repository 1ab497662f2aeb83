"""The flywheel turning twice at tiny sizes: two windows, two recorded generations, one table, one report."""

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import flywheel
from pipeline.lake import Lake, Partition
from tests.assets import traffic_shapes
from tests.assets.test_curation_assets import write_traffic
from tests.assets.traffic import TOY_GENERATION
from training.generation_plan import built_upon, last_built_upon

DAYS = ("2026-01-05", "2026-01-06")


def test_windows_are_consecutive_blocks_ending_at_the_last_day():
    days = [f"2026-01-{d:02d}" for d in range(1, 8)]
    assert flywheel.windows(days, 3, 2) == [days[1:3], days[3:5], days[5:7]]
    with pytest.raises(ValueError, match="need 8 replayed days"):
        flywheel.windows(days, 4, 2)


@pytest.mark.integration
# two consolidated days and two whole generations: a few minutes on an idle 2-core machine, far more on a busy one
@pytest.mark.timeout(1800)
def test_two_generations_in_a_row(tmp_path, capsys):
    """On traffic unlike the default: each user in one conversation, no thumbs, no prompt asked twice, so no
    engagement pair can be mined and the pairwise judge is not trained; both generations are recorded anyway."""
    src = tmp_path / "src"
    src.mkdir()
    traffic_shapes.specific_questions(src, list(DAYS), per_day=120)
    home = tmp_path / "home"
    resources = {
        "settings": {"home": str(home), "source_kind": "folder", "source_path": str(src)},
        "curation": {"topics": 4, "retain_fraction": 0.9, "eval_fraction": 0.2, "embed_backend": "torch"},
        # no window_days here: the flywheel gives each generation its own window whatever the default
        "generation": TOY_GENERATION,
        "release": {"steerability_samples": 1, "bootstrap_resamples": 200},
        "ab": {"simulated_users": 4000, "n_bootstrap": 200},
    }
    instance = dg.DagsterInstance.ephemeral()
    assert flywheel.run_flywheel(2, 1, instance=instance, resources=resources) == 0

    lake = Lake(home)
    table = lake.scan("generations").collect().sort("number")
    assert table["generation"].to_list() == ["gen-1", "gen-2"]
    first, second = table.row(0, named=True), table.row(1, named=True)
    # each generation learned from its own window
    assert first["days"] == [DAYS[0]] and second["days"] == [DAYS[1]]
    assert first["parent"] == "gen-0"
    # a blocked generation is never built upon
    assert second["parent"] == ("gen-1" if built_upon(table)[0] else "gen-0")
    for row in (first, second):
        # the judge the traffic could not train is named, with its count, beside the gates it left insufficient
        named = [v for v in row["insufficient"] if v.startswith("pairwise judge not trained")]
        assert len(named) == 1 and "preference pairs (minimum 10)" in named[0], row["insufficient"]
        profile = lake.read("traffic_profile", Partition.generation(row["generation"]))
        pairs = profile.filter(pl.col("measure").str.starts_with("preference pairs")).row(0, named=True)
        assert not pairs["enough"] and f"not trained: {pairs['value']} preference pairs" in named[0]
        assert row["released"] == (row["blocked_by"] == [])
        assert 0.0 <= row["steer_if_heldout"] <= 1.0 and 0.0 <= row["steer_violation_heldout"] <= 1.0
        assert row["win_rate_user"] is not None and row["win_rate_internal"] is not None
        assert (row["sim_breadth_lift"] is not None) == row["released"]  # only a released one is A/B tested
    # the training data of each generation held character-card rows from the training cards only
    sft = json.loads((home / "models" / "gen-1" / "datasets" / "sft" / "manifest.json").read_text())
    assert "steerability" in sft["available_by_source"]
    cands = lake.read("candidates", Partition.generation("gen-1"))
    steer = cands.filter(pl.col("rules_kept").is_not_null())
    assert steer.height and steer["prompt_id"].str.starts_with("steer:").all()

    out = capsys.readouterr().out
    assert "pairwise judge not trained" in out
    assert "pairwise judge not trained" in (home / "reports" / "generations" / "index.html").read_text()
    assert "gen-1 (window 2026-01-05 .. 2026-01-05):" in out and "offline_eval" in out
    assert "steer_if_heldout" in out and "generations report:" in out
    # the difference is printed for the generation the flywheel builds on: released and not rejected by its A/B
    assert ("held-out instruction following, gen-0 -> " in out) == (last_built_upon(table) != "gen-0")
    assert "ab_verdict" in out
    assert "DEBUG" not in out
    assert Path(home / "reports" / "generations" / "index.html").is_file()
    # running it again finds both generations recorded: nothing to redo
    assert flywheel.run_flywheel(2, 1, instance=instance, resources=resources) == 0
    assert lake.scan("generations").collect().height == 2


def test_next_plan_takes_its_window_and_skips_blocked_parents(tmp_path):
    from datetime import date

    from assets.generation import GenerationSettings, next_plan
    from assets.resources import FlywheelSettings
    from tests.training.tiny_policy import prompts_frame

    settings = FlywheelSettings(home=str(tmp_path))
    lake = Lake(tmp_path)
    days = [date(2026, 1, d) for d in range(1, 5)]
    for day in days:
        lake.write("prompts", day, prompts_frame(2, day=day))
    plan = next_plan(settings, GenerationSettings(window_days=2, window_end="2026-01-02"), "now")
    assert (plan.generation, plan.parent, plan.days) == ("gen-1", "gen-0", ["2026-01-01", "2026-01-02"])
    assert next_plan(settings, GenerationSettings(window_days=2), "now").days == ["2026-01-03", "2026-01-04"]
    with pytest.raises(ValueError, match="window_end=2025-12-31"):
        next_plan(settings, GenerationSettings(window_end="2025-12-31"), "now")
    for number, released in ((1, True), (2, False)):
        lake.write(
            "generations",
            Partition.generation(f"gen-{number}"),
            pl.DataFrame({"generation": [f"gen-{number}"], "number": [number], "released": [released]}),
        )
    plan = next_plan(settings, GenerationSettings(window_days=2), "now")
    # gen-2 was blocked: gen-3 starts again from gen-1, the last released generation
    assert (plan.generation, plan.parent) == ("gen-3", "gen-1")


def test_the_table_names_the_verdicts_with_insufficient_evidence(tmp_path, capsys):
    from assets.resources import FlywheelSettings
    from evaluation.generations_table import GENERATIONS

    settings = FlywheelSettings(home=str(tmp_path))
    lake = Lake(tmp_path)
    for number, blocked, short, verdict in (
        (1, [], ["slice_divergence", "win_rate_ceiling"], "insufficient"),
        (2, ["artifact_drift"], [], None),
    ):
        row = {c: None for c in GENERATIONS.names()}
        row.update(
            generation=f"gen-{number}",
            number=number,
            parent="gen-0",
            metrics="{}",
            released=not blocked,
            blocked_by=blocked,
            insufficient=short + (["ab_readout"] if verdict == "insufficient" else []),
            ab_verdict=verdict,
            gate_detail=json.dumps(
                [
                    {"gate": "win_rate_ceiling", "severity": "insufficient" if short else "ok"},
                    {"gate": "artifact_drift", "severity": "error" if blocked else "ok"},
                ]
            ),
        )
        lake.write("generations", Partition.generation(f"gen-{number}"), pl.DataFrame([row], schema=GENERATIONS))
    table = flywheel.generations_table(settings)
    assert table["insufficient"].to_list() == [["slice_divergence", "win_rate_ceiling", "ab_readout"], []]
    flywheel.print_table(settings)
    out = capsys.readouterr().out
    assert " insufficient " in out.splitlines()[1]  # the column header, between blocked_by and ab_verdict
    # and each gate's verdict, generation by generation
    assert "gen-1: win_rate_ceiling insufficient, artifact_drift pass, A/B insufficient" in out
    assert "gen-2: win_rate_ceiling pass, artifact_drift fail" in out
    # a generation whose A/B readout had too little evidence is still built upon: it was not rejected
    assert last_built_upon(lake.scan("generations").collect()) == "gen-1"


def test_the_table_shows_the_fluency_of_each_generation_and_its_parent(tmp_path):
    from assets.resources import FlywheelSettings
    from evaluation.generations_table import GENERATIONS

    settings = FlywheelSettings(home=str(tmp_path))
    lake = Lake(tmp_path)
    fluency = [{"new": {"mean_slor": 1.2}, "parent": {"mean_slor": 0.4}}, None]
    for number, measured in enumerate(fluency, start=1):
        row = {c: None for c in GENERATIONS.names()}
        metrics = {"style": {"new": {"mean_chars": 50.0}}} | ({"fluency": measured} if measured else {})
        row.update(generation=f"gen-{number}", number=number, parent="gen-0", metrics=json.dumps(metrics))
        lake.write("generations", Partition.generation(f"gen-{number}"), pl.DataFrame([row], schema=GENERATIONS))
    table = flywheel.generations_table(settings)
    # gen-0's fluency is gen-1's parent's; a generation recorded without the measure shows none
    assert table["fluency"].to_list() == [1.2, None] and table["fluency_parent"].to_list() == [0.4, None]
    assert table["mean_chars"].to_list() == [50.0, 50.0]


def test_smollm2_on_a_cpu_runs_at_its_cpu_sizes():
    from training.policy.smollm2 import Smollm2Sizes

    sizes = flywheel.run_resources("smollm2", 5, cpu=True)
    assert sizes["generation"]["sft_steps"] == Smollm2Sizes().sft_steps and sizes["generation"]["seed"] == 5
    assert sizes["release"] == {"steerability_samples": Smollm2Sizes().steerability_samples}
    on_gpu = flywheel.run_resources("smollm2", None, cpu=False)
    assert on_gpu["generation"]["use_lora"] is False and on_gpu["generation"]["candidate_prompts"] == 512
    assert flywheel.run_resources("tiny", None, cpu=True) == {}


def test_one_seed_reaches_the_generation_settings(monkeypatch):
    from assets.generation import GenerationPlan, GenerationSettings, run_seed

    seen = {}
    monkeypatch.setattr(
        flywheel,
        "run_flywheel",
        lambda g, w, resources=None, history_days=0, consolidate_only=False: (
            seen.update(resources=resources, history=history_days) or 0
        ),
    )
    assert flywheel.main(["--generations", "1", "--seed", "3"]) == 0
    assert seen["resources"] == {"generation": {"seed": 3}} and seen["history"] == flywheel.DEFAULT_HISTORY_DAYS
    monkeypatch.setenv("FLYWHEEL_SEED", "2")  # what `make flywheel SEED=2` sets
    assert GenerationSettings().seed == 2
    plan = GenerationPlan("gen-2", 2, "gen-1", [], "now")
    # seed 0 keeps each generation's own draws; another seed moves them all, never onto another seed's
    assert run_seed(plan, 0) == 2 and len({run_seed(plan, s) for s in range(4)}) == 4


def test_history_days_are_consolidated_before_the_first_window(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    days = [f"2026-01-{d:02d}" for d in range(1, 7)]
    for k, day in enumerate(days):
        write_traffic(src, n_conversations=4, max_messages=4, day=day, offset=4 * k)
    consolidated, runs = [], []

    def consolidate(todo, instance, resources):
        consolidated.append(list(todo))
        runs.append(resources["curation"]["history_start"])
        return True

    monkeypatch.setattr(flywheel, "consolidate", consolidate)
    monkeypatch.setattr(flywheel, "run_one", lambda instance, resources, label: False)  # stop after the first
    settings = {"settings": {"home": str(tmp_path / "home"), "source_kind": "folder", "source_path": str(src)}}
    assert flywheel.run_flywheel(2, 1, instance=dg.DagsterInstance.ephemeral(), resources=settings, history_days=2) == 1
    # windows 01-05 and 01-06; the two days before the first window come with it and start the dedup history
    assert consolidated == [["2026-01-03", "2026-01-04", "2026-01-05"]] and runs == ["2026-01-03"]
    consolidated.clear()
    assert flywheel.run_flywheel(2, 1, instance=dg.DagsterInstance.ephemeral(), resources=settings, history_days=9) == 1
    assert (
        consolidated == [days[:5]] and "the source has 4 days before the first window, not 9" in capsys.readouterr().out
    )
    consolidated.clear()
    only = flywheel.run_flywheel(
        2, 1, instance=dg.DagsterInstance.ephemeral(), resources=settings, history_days=1, consolidate_only=True
    )
    assert only == 0 and consolidated == [days[3:]]  # the history and every window, and no generation
    with pytest.raises(ValueError, match="--history-days must be >= 0"):
        flywheel.run_flywheel(1, 1, resources=settings, history_days=-1)
