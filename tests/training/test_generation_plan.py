import json
from datetime import date

import polars as pl
import pytest

from pipeline.lake import Lake
from pipeline.sampling import SamplingConfig
from pipeline.user_split import assign_split
from training.generation_plan import (
    BASE,
    GenerationPlan,
    built_upon,
    last_built_upon,
    plan_generation,
    read_window,
    training_prompts,
    window,
    windows,
)

DAYS = [date(2026, 1, d) for d in range(1, 8)]


def test_a_window_is_the_last_days_on_or_before_its_end():
    assert window(DAYS, 2) == DAYS[5:7]
    assert window(DAYS, 3, DAYS[3]) == DAYS[1:4]
    assert window(DAYS, 30, DAYS[1]) == DAYS[:2]
    assert window(DAYS, 2, date(2025, 12, 31)) == []
    assert window([d.isoformat() for d in DAYS], 1, "2026-01-03") == ["2026-01-03"]
    with pytest.raises(ValueError, match="window_days=0"):
        window(DAYS, 0)


def test_the_flywheel_windows_are_the_windows_each_generation_plans():
    blocks = windows(DAYS, 3, 2)
    assert blocks == [DAYS[1:3], DAYS[3:5], DAYS[5:7]]
    for number, block in enumerate(blocks, start=1):
        recorded = pl.DataFrame({"generation": [f"gen-{n}" for n in range(1, number)], "number": range(1, number)})
        plan = plan_generation(DAYS, recorded, 2, block[-1].isoformat(), "now")
        assert (plan.generation, plan.day_dates) == (f"gen-{number}", block)
    with pytest.raises(ValueError, match="need 8 replayed days"):
        windows(DAYS, 4, 2)


def test_a_plan_builds_on_the_last_generation_built_upon():
    recorded = pl.DataFrame(
        {
            "generation": ["gen-1", "gen-2", "gen-3"],
            "number": [1, 2, 3],
            "released": [True, True, False],
            "ab_verdict": [None, "no-ship: depth fell", None],
        }
    )
    assert last_built_upon(recorded) == "gen-1"
    assert last_built_upon(pl.DataFrame()) == BASE
    plan = plan_generation(DAYS, recorded, 7, None, "now")
    assert (plan.generation, plan.number, plan.parent, plan.days[0]) == ("gen-4", 4, "gen-1", "2026-01-01")
    with pytest.raises(ValueError, match="window_end=2025-12-31"):
        plan_generation(DAYS, recorded, 2, "2025-12-31", "now")
    with pytest.raises(ValueError, match="no curated prompts"):
        plan_generation([], recorded, 2, None, "now")


def test_training_prompts_are_the_windows_training_users_only(tmp_path):
    lake = Lake(tmp_path)
    for day in DAYS[:3]:
        users = [f"u{i}" for i in range(40)]
        frame = pl.DataFrame(
            {
                "prompt_id": [f"{day}-{u}" for u in users],
                "user_hash": users,
                "source": ["external"] * 40,
                "day": [day] * 40,
            }
        )
        lake.write("unique_prompts", day, frame)
    plan = GenerationPlan("gen-1", 1, BASE, [d.isoformat() for d in DAYS[1:3]], "now")
    window_rows = read_window(lake, "unique_prompts", plan)
    assert window_rows.height == 80 and set(window_rows["day"]) == set(DAYS[1:3])
    held = assign_split(window_rows["user_hash"], window_rows["source"], SamplingConfig()) != "train"
    assert held.any()
    prompts = training_prompts(lake, plan, cap=1000)
    assert set(prompts["user_hash"]).isdisjoint(window_rows.filter(held)["user_hash"])
    assert prompts.height == window_rows.height - int(held.sum())
    assert training_prompts(lake, plan, cap=10).height == 10
    with pytest.raises(ValueError, match="no unique_prompts"):
        training_prompts(lake, GenerationPlan("gen-1", 1, BASE, ["2026-02-01"], "now"), cap=10)


def test_a_released_generation_no_better_than_its_parent_is_not_built_upon():
    def metrics(improved):
        return json.dumps({"improvement": {"improved": improved}}) if improved is not None else None

    recorded = pl.DataFrame(
        {
            "generation": ["gen-1", "gen-2", "gen-3"],
            "number": [1, 2, 3],
            "released": [True, True, True],
            "ab_verdict": ["inconclusive", "inconclusive", "inconclusive"],
            # gen-1 was recorded before improvement was: released was enough then
            "metrics": [metrics(None), metrics(True), metrics(False)],
        }
    )
    assert built_upon(recorded).to_list() == [True, True, False]
    assert last_built_upon(recorded) == "gen-2"
    assert plan_generation(DAYS, recorded, 7, None, "now").parent == "gen-2"
