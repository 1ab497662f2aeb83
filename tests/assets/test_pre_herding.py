"""A pairwise reward model that fails its check never judges: the generation keeps its parent's."""

from assets.generation import GenerationPlan, reward_model_dir
from assets.resources import FlywheelSettings
from assets.reward_models import _keep_parent_judge
from quality.outcomes import CRITICAL, WARNING, CheckOutcome

FAILED = CheckOutcome("beats_length_baseline", False, "held-out pair_accuracy 0.422 vs length-only 0.422")


def _plan(parent: str) -> GenerationPlan:
    return GenerationPlan("gen-2", 2, parent, ["2026-01-11", "2026-01-12"], "2026-01-13T06:00:00+00:00")


def test_a_failed_pairwise_model_is_replaced_by_the_parents(tmp_path):
    settings = FlywheelSettings(home=str(tmp_path))
    parent = reward_model_dir(settings, "gen-1", "pairwise")
    parent.mkdir(parents=True)
    (parent / "head.pt").write_text("gen-1 weights")
    target = reward_model_dir(settings, "gen-2", "pairwise")
    target.mkdir(parents=True)
    (target / "head.pt").write_text("gen-2 weights")

    outcome, judge = _keep_parent_judge(settings, _plan("gen-1"), target, FAILED)
    assert judge == "gen-1" and (target / "head.pt").read_text() == "gen-1 weights"
    assert not outcome.passed and outcome.severity == WARNING and outcome.success  # warns, does not block
    assert "gen-1's pairwise model" in outcome.detail and FAILED.detail in outcome.detail
    assert sorted(p.name for p in target.parent.iterdir()) == ["reward_pairwise"]  # no staging folder left


def test_the_first_generation_has_no_fallback(tmp_path):
    settings = FlywheelSettings(home=str(tmp_path))
    target = reward_model_dir(settings, "gen-1", "pairwise")
    outcome, judge = _keep_parent_judge(settings, _plan("gen-0"), target, FAILED)
    assert outcome is FAILED and judge == "gen-2" and outcome.severity == CRITICAL and not outcome.success
