"""Dagster resources: the one place where settings enter the flywheel.

Every field has a default that works offline on a laptop and can be set from the environment
(`FLYWHEEL_*` variables, read when the code location loads) or in the launchpad. The resource maps
onto the plain config dataclasses of the libraries, which validate the values and fail fast with a
message that names the setting. A field that a library dataclass defines is declared with
`library_field`, which takes its default and help text from there: the library stays their one source.
"""

import os
from dataclasses import fields
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from engine.sampler import policy_backend
from evaluation.ab_config import AbConfig
from evaluation.ab_simulator import AbSimConfig
from evaluation.offline_eval import OfflineEvalConfig
from evaluation.user_simulator import UserSimulatorConfig
from pipeline.config_fields import field_default, field_help
from pipeline.device import policy_cpu_threads
from pipeline.ingest import IngestConfig
from pipeline.lake import Lake
from pipeline.schema import SALT_ENV, UserHasher
from pipeline.source_config import SourceConfig


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


AB_SOURCES = ("users", "simulate", "lake")


def user_salt_env() -> dg.EnvVar | None:
    """The salt as a reference to its environment variable (resolved when a run starts), when it is set."""
    return dg.EnvVar(SALT_ENV) if os.environ.get(SALT_ENV) else None


def library_field(cls: type, name: str, env: str | None = None) -> Any:
    """A resource field with the default and help text of the dataclass field `cls.name`; with `env`, that
    environment variable (read when the code location loads) overrides the default."""
    default, description = field_default(cls, name), field_help(cls, name) or ""
    if env is None:
        return Field(default=default, description=description)
    cast = type(default) if default is not None else str
    return Field(
        default_factory=lambda: cast(os.environ[env]) if os.environ.get(env) else default,
        description=f"{description} (env {env})",
    )


class FlywheelSettings(dg.ConfigurableResource):
    """Where the lake lives and where traffic comes from."""

    home: str = Field(
        default_factory=lambda: _env("FLYWHEEL_HOME", "data"),
        description="FLYWHEEL_HOME: folder of the lake, catalog, models and reports",
    )
    source_kind: str = library_field(SourceConfig, "kind", env="FLYWHEEL_SOURCE_KIND")
    source_path: str | None = library_field(SourceConfig, "path", env="FLYWHEEL_SOURCE_PATH")
    replay_end_date: str = library_field(SourceConfig, "end_date", env="FLYWHEEL_REPLAY_END")
    replay_days: int = library_field(SourceConfig, "replay_days", env="FLYWHEEL_REPLAY_DAYS")
    internal_user_fraction: float = library_field(SourceConfig, "internal_user_fraction")
    max_line_bytes: int = library_field(SourceConfig, "max_line_bytes")
    max_file_bytes: int = library_field(SourceConfig, "max_file_bytes")
    max_day_bytes: int = library_field(SourceConfig, "max_day_bytes")
    max_json_depth: int = library_field(SourceConfig, "max_json_depth")
    max_int_digits: int = library_field(SourceConfig, "max_int_digits")
    max_text_chars: int = library_field(IngestConfig, "max_text_chars")
    max_id_chars: int = library_field(IngestConfig, "max_id_chars")
    late_grace_minutes: int = library_field(IngestConfig, "late_grace_minutes")
    production: bool = Field(
        default_factory=lambda: _env("FLYWHEEL_PRODUCTION", "0").lower() in ("1", "true", "yes"),
        description="production mode: refuses a missing, public (demo or example placeholder) or short (< 16 chars) salt for user hashes",
    )
    # A secret: pass it as dg.EnvVar("FLYWHEEL_USER_SALT") (as `assets.definitions` does), so the UI and
    # a run's config show the variable's name, never its value.
    user_salt: str | None = Field(
        default=None,
        description="secret salt of user hashes: set it as the environment variable FLYWHEEL_USER_SALT",
    )

    def lake(self) -> Lake:
        return Lake(Path(self.home))

    def source_config(self) -> SourceConfig:
        return SourceConfig(
            kind=self.source_kind,
            path=self.source_path,
            end_date=self.replay_end_date,
            replay_days=self.replay_days,
            internal_user_fraction=self.internal_user_fraction,
            max_line_bytes=self.max_line_bytes,
            max_file_bytes=self.max_file_bytes,
            max_day_bytes=self.max_day_bytes,
            max_json_depth=self.max_json_depth,
            max_int_digits=self.max_int_digits,
        )

    def ingest_config(self) -> IngestConfig:
        return IngestConfig.for_source(
            self.source_config(),
            max_text_chars=self.max_text_chars,
            max_id_chars=self.max_id_chars,
            late_grace_minutes=self.late_grace_minutes,
        )

    def hasher(self) -> UserHasher:
        return UserHasher.from_settings(self.user_salt, production=self.production)

    @property
    def reports_dir(self) -> Path:
        return Path(self.home) / "reports"


class ReleaseSettings(dg.ConfigurableResource):
    """Offline evaluation and release gates: each field is the `evaluation.offline_eval.OfflineEvalConfig`
    field of that name (held-out prompts per slice and reply length come from the generation's sizes)."""

    temperature: float = library_field(OfflineEvalConfig, "temperature")
    steerability_samples: int = library_field(OfflineEvalConfig, "steerability_samples")
    steerability_suite: str | None = library_field(OfflineEvalConfig, "steerability_suite")
    bootstrap_resamples: int = library_field(OfflineEvalConfig, "bootstrap_resamples")
    cpu_threads: int | None = Field(
        default=None,
        description="torch CPU threads while sampling; None: one for the tiny built-in policy (fastest, "
        "and no thread spinning on a busy machine), torch's default for a configured `policy_model`",
    )
    ifeval_path: str | None = library_field(OfflineEvalConfig, "ifeval_path", env="FLYWHEEL_IFEVAL")
    ifeval_max_prompts: int = library_field(OfflineEvalConfig, "ifeval_max_prompts")
    ifeval_max_new_tokens: int = library_field(OfflineEvalConfig, "ifeval_max_new_tokens")
    ifeval_heldout_fraction: float = library_field(OfflineEvalConfig, "ifeval_heldout_fraction")
    ifeval_split_salt: str = library_field(OfflineEvalConfig, "ifeval_split_salt")
    ifeval_margin: float = library_field(OfflineEvalConfig, "ifeval_margin")
    min_ifeval_prompts: int = library_field(OfflineEvalConfig, "min_ifeval_prompts")
    win_rate_error: float = library_field(OfflineEvalConfig, "win_rate_error")
    win_rate_warn: float = library_field(OfflineEvalConfig, "win_rate_warn")
    slice_divergence_max: float = library_field(OfflineEvalConfig, "slice_divergence_max")
    slice_divergence_z: float = library_field(OfflineEvalConfig, "slice_divergence_z")
    steerability_tolerance: float = library_field(OfflineEvalConfig, "steerability_tolerance")
    max_train_eval_overlap: int = library_field(OfflineEvalConfig, "max_train_eval_overlap")
    min_slice_users: int = library_field(OfflineEvalConfig, "min_slice_users")
    judge_margin: float = library_field(OfflineEvalConfig, "judge_margin")
    min_judge_heldout: int = library_field(OfflineEvalConfig, "min_judge_heldout")
    min_decided_gates: int = library_field(OfflineEvalConfig, "min_decided_gates")
    min_artifact_replies: int = library_field(OfflineEvalConfig, "min_artifact_replies")
    measure_fluency: bool = library_field(OfflineEvalConfig, "measure_fluency")
    fluency_reference_model: str = library_field(OfflineEvalConfig, "fluency_reference_model")
    fluency_on_missing: str = library_field(OfflineEvalConfig, "fluency_on_missing")
    fluency_margin: float = library_field(OfflineEvalConfig, "fluency_margin")
    min_fluency_replies: int = library_field(OfflineEvalConfig, "min_fluency_replies")
    sample_prompts: int = library_field(OfflineEvalConfig, "sample_prompts")

    def eval_config(self, generation) -> OfflineEvalConfig:
        """The library config; `generation` (GenerationSettings) sets the prompts per slice, the reply length and
        the seed (its one seed of the models' random choices)."""
        forwarded = {
            f.name: getattr(self, f.name) for f in fields(OfflineEvalConfig) if f.name in type(self).model_fields
        }
        if self.cpu_threads is None:
            forwarded["cpu_threads"] = policy_cpu_threads(generation.policy_model)
        return OfflineEvalConfig(
            **forwarded,
            eval_prompts=generation.eval_prompts,
            max_new_tokens=generation.max_new_tokens,
            seed=generation.seed,
            sampling_backend=generation.sampling_backend or policy_backend(generation.policy_model),
        )


class AbSettings(dg.ConfigurableResource):
    """Where the A/B logs come from and how they are read: the analysis fields are those of
    `evaluation.ab_test.AbConfig`, the simulations' those of `evaluation.ab_simulator.AbSimConfig`,
    `evaluation.user_simulator` and `evaluation.simulated_ab`."""

    source: str = Field(
        default_factory=lambda: _env("FLYWHEEL_AB_SOURCE", "users"),
        description="users: simulated users act on an engagement model's scores of both arms' eval replies "
        "(labelled 'simulated from <model>'); simulate: simulated logs with a planted lift (labelled as such); "
        "lake: read the ab_exposures / ab_events tables you loaded (env FLYWHEEL_AB_SOURCE)",
    )
    window_days: int = library_field(AbConfig, "window_days")
    start: str | None = library_field(AbConfig, "start")
    control: str = library_field(AbConfig, "control")
    treatment: str = library_field(AbConfig, "treatment")
    planned_treatment_share: float = library_field(AbConfig, "planned_treatment_share")
    alpha: float = library_field(AbConfig, "alpha")
    srm_alpha: float = library_field(AbConfig, "srm_alpha")
    n_bootstrap: int = library_field(AbConfig, "n_bootstrap")
    simulated_users: int = library_field(AbSimConfig, "n_users")
    planted_lift_breadth: float = library_field(AbSimConfig, "lift_breadth")
    planted_lift_depth: float = library_field(AbSimConfig, "lift_depth")
    simulator_min_rows: int = library_field(UserSimulatorConfig, "min_rows")
    min_simulator_users: int = library_field(UserSimulatorConfig, "min_users")
    simulator_refits: int = library_field(UserSimulatorConfig, "refits")

    def ab_config(self, start: str | None = None, seed: int = 0) -> AbConfig:
        """The analysis; `seed` (the generation settings' one seed) seeds its bootstrap."""
        if self.source not in AB_SOURCES:
            raise ValueError(f"ab source={self.source!r}: set `source` (or FLYWHEEL_AB_SOURCE) to one of {AB_SOURCES}")
        names = {f.name for f in fields(AbConfig)} - {"start", "seed"}
        return AbConfig(start=start or self.start, seed=seed, **{n: getattr(self, n) for n in names})

    def sim_config(self, last_day: str, seed: int, cls: type = AbSimConfig, **extra):
        """The simulation (`cls`: the planted-lift AbSimConfig or the user simulator's SimulatedAbConfig) of a
        generation whose window ends on `last_day`: its test starts the day after."""
        start = self.start or (date.fromisoformat(last_day) + timedelta(days=1)).isoformat()
        return cls(
            n_users=self.simulated_users,
            treatment_share=self.planned_treatment_share,
            window_days=self.window_days,
            exposure_days=min(3, self.window_days),
            start=start,
            control=self.control,
            treatment=self.treatment,
            seed=seed,
            **extra,
        )

    def planted_config(self, last_day: str, seed: int) -> AbSimConfig:
        lifts = {"lift_breadth": self.planted_lift_breadth, "lift_depth": self.planted_lift_depth}
        return self.sim_config(last_day, seed, AbSimConfig, **lifts)

    def describe_source(self, simulator: str | None = None) -> str:
        if self.source == "users" and simulator is None:
            return "not simulated: the traffic had too little data to train the user simulator"
        if self.source == "users":
            return f"SIMULATED users ({self.simulated_users}), simulated from {simulator}, not real traffic"
        if self.source == "simulate":
            return (
                f"SIMULATED logs (planted lift: breadth {self.planted_lift_breadth:+.1%}, depth "
                f"{self.planted_lift_depth:+.1%}, {self.simulated_users} users), not real traffic"
            )
        return "ab_exposures / ab_events tables in the lake"
