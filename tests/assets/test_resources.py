"""Resources forward the libraries' settings: the defaults and help texts are the library dataclasses'."""

import dataclasses

import pytest

from assets.generation import GenerationSettings
from assets.resources import AbSettings, FlywheelSettings, ReleaseSettings
from evaluation.ab_config import AbConfig
from evaluation.ab_simulator import AbSimConfig
from evaluation.gate_config import GateConfig
from evaluation.offline_eval import OfflineEvalConfig
from pipeline.ingest import IngestConfig
from pipeline.source_config import SourceConfig

# resource field -> (library dataclass, its field)
FORWARDED = {
    FlywheelSettings: {
        "source_kind": (SourceConfig, "kind"),
        "source_path": (SourceConfig, "path"),
        "replay_end_date": (SourceConfig, "end_date"),
        "replay_days": (SourceConfig, "replay_days"),
        "internal_user_fraction": (SourceConfig, "internal_user_fraction"),
        "max_text_chars": (IngestConfig, "max_text_chars"),
        "max_id_chars": (IngestConfig, "max_id_chars"),
        "late_grace_minutes": (IngestConfig, "late_grace_minutes"),
    },
    ReleaseSettings: {
        name: (OfflineEvalConfig, name)
        for name in ReleaseSettings.model_fields
        if name not in ("cpu_threads",)  # restated: None means one thread for the built-in policy
    },
    AbSettings: {
        **{n: (AbConfig, n) for n in AbSettings.model_fields if n in AbConfig.__dataclass_fields__},
        "simulated_users": (AbSimConfig, "n_users"),
        "planted_lift_breadth": (AbSimConfig, "lift_breadth"),
        "planted_lift_depth": (AbSimConfig, "lift_depth"),
    },
}


def _library_field(cls, name) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(cls)}[name]


@pytest.mark.parametrize("resource", list(FORWARDED), ids=lambda r: r.__name__)
def test_resource_defaults_and_help_are_the_librarys(resource, monkeypatch):
    for env in ("FLYWHEEL_SOURCE_KIND", "FLYWHEEL_SOURCE_PATH", "FLYWHEEL_REPLAY_END", "FLYWHEEL_REPLAY_DAYS"):
        monkeypatch.delenv(env, raising=False)
    built = resource()
    for name, (cls, lib_name) in FORWARDED[resource].items():
        lib = _library_field(cls, lib_name)
        assert getattr(built, name) == getattr(cls(), lib_name), f"{resource.__name__}.{name}"
        description = resource.model_fields[name].description or ""
        assert description.startswith(lib.metadata["help"]), f"{resource.__name__}.{name}"


def test_release_gates_forward_the_gate_config():
    for name in (
        "win_rate_error",
        "win_rate_warn",
        "slice_divergence_max",
        "slice_divergence_z",
        "steerability_tolerance",
    ):
        assert getattr(ReleaseSettings(), name) == getattr(GateConfig(), name)


def test_restated_fields_are_pinned_equal():
    # the generation's sizes are the evaluation's defaults too
    assert GenerationSettings().eval_prompts == OfflineEvalConfig().eval_prompts
    assert GenerationSettings().max_new_tokens == OfflineEvalConfig().max_new_tokens


def test_environment_overrides_a_forwarded_default(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_REPLAY_DAYS", "5")
    assert FlywheelSettings().replay_days == 5


def test_settings_build_valid_library_configs():
    generation = GenerationSettings(seed=3)  # the one seed of the models reaches the evaluation
    config = ReleaseSettings().eval_config(generation)
    assert (config.seed, config.cpu_threads, config.eval_prompts) == (3, 1, generation.eval_prompts)
    assert ReleaseSettings().eval_config(GenerationSettings(policy_model="x")).cpu_threads is None
    assert AbSettings(window_days=5).ab_config().window_days == 5
    with pytest.raises(ValueError, match="FLYWHEEL_AB_SOURCE"):
        AbSettings(source="nope").ab_config()
