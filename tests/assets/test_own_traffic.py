"""Traffic unlike the default turns the whole loop: a judge the traffic offers too little data is recorded as not
trained (insufficient evidence), and the generation goes on with the judges that have their data. Two whole
generations on traffic with no minable pairs are `tests/assets/test_flywheel.py::test_two_generations_in_a_row`."""

import dagster as dg
import pytest

from assets.curation import CURATION_ASSETS, CurationSettings
from assets.generation import GenerationSettings, generation_plan
from assets.herding import policy_base
from assets.ingest import ingest
from assets.pre_herding import PRE_HERDING_ASSETS
from assets.resources import AbSettings, FlywheelSettings, ReleaseSettings
from tests.assets import traffic_shapes
from tests.assets.traffic import TOY_GENERATION

DAYS = ["2026-01-05", "2026-01-06"]


def _judges_on(src, home, day, extra=()):
    settings = FlywheelSettings(home=str(home), source_kind="folder", source_path=str(src))
    resources = {
        "settings": settings,
        "curation": CurationSettings(
            topics=4, retain_fraction=0.9, eval_fraction=0.2, embed_backend="torch", history_start=day
        ),
        # the judges on a few hundred rows: what is tested is which of them the traffic can train, not how well
        "generation": GenerationSettings(
            window_days=1, window_end=day, **{**TOY_GENERATION, "reward_train_rows": 400, "pair_mining_rows": 400}
        ),
        "release": ReleaseSettings(),
        "ab": AbSettings(),
    }
    assert dg.materialize([ingest, *CURATION_ASSETS], partition_key=day, resources=resources).success
    assets = [generation_plan, *PRE_HERDING_ASSETS, *extra]
    return dg.materialize(
        [dg.AssetSpec("prompts"), *assets],
        selection=[a.key for a in assets],
        resources=resources,
        raise_on_error=False,
    )


@pytest.mark.integration
@pytest.mark.parametrize("shape", ["long_topical", "persona_chats"])
def test_other_traffic_shapes_profile_and_train_the_judges_they_can(shape, tmp_path, request):
    src = tmp_path / "src"
    src.mkdir()
    if shape == "persona_chats":
        traffic_shapes.persona_chats(src, DAYS[:1], request.getfixturevalue("shared_data"), per_day=50)
    else:
        traffic_shapes.long_topical(src, DAYS[:1], per_day=25)
    result = _judges_on(src, tmp_path / "home", DAYS[0])
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    mats = {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    profile = checks[("traffic_profile", "judges_have_data")]
    assert profile.passed == (mats["traffic_profile"]["lacking"].value == {})
    for judge in ("pointwise", "pairwise"):
        meta = mats[f"reward_model_{judge}"]
        check = checks[(f"reward_model_{judge}", "beats_length_baseline")]
        if "trained" in meta:  # not trained: the count, the minimum and the fix, and a warning, never a failure
            assert meta["trained"].value is False and meta["count"].value < meta["minimum"].value
            assert check.severity == dg.AssetCheckSeverity.WARN and "insufficient evidence" in check.description
            assert judge in mats["traffic_profile"]["lacking"].value


@pytest.mark.integration
def test_traffic_that_trains_no_reward_model_stops_before_gen_0_is_built(tmp_path):
    """A handful of conversations that all go on to their end: no reply the user stopped after, no pair."""
    src = tmp_path / "src"
    src.mkdir()
    traffic_shapes.specific_questions(src, DAYS[:1], per_day=3)
    result = _judges_on(src, tmp_path / "home", DAYS[0], extra=[policy_base])
    assert not result.success
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    stop = checks[("traffic_profile", "judges_have_data")]
    assert not stop.passed and stop.severity == dg.AssetCheckSeverity.ERROR
    assert "no reward model can be trained" in stop.description and "preference pairs" in stop.description
    done = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "traffic_profile" in done and not done & {"reward_model_pointwise", "reward_model_pairwise", "policy_base"}
