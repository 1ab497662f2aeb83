"""Dagster resources: the one place where settings enter the flywheel.

Every field has a default that works offline on a laptop and can be set from the environment
(`FLYWHEEL_*` variables, read when the code location loads) or in the launchpad. The resource maps
onto the plain config dataclasses of the libraries, which validate the values and fail fast with a
message that names the setting.
"""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.ingest import IngestConfig
from pipeline.lake import Lake
from pipeline.schema import SALT_ENV, UserHasher
from pipeline.sources import SourceConfig


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def user_salt_env() -> dg.EnvVar | None:
    """The salt as a reference to its environment variable (resolved when a run starts), when it is set."""
    return dg.EnvVar(SALT_ENV) if os.environ.get(SALT_ENV) else None


class FlywheelSettings(dg.ConfigurableResource):
    """Where the lake lives and where traffic comes from."""

    home: str = Field(
        default_factory=lambda: _env("FLYWHEEL_HOME", "data"),
        description="FLYWHEEL_HOME: folder of the lake, catalog, models and reports",
    )
    source_kind: str = Field(
        default_factory=lambda: _env("FLYWHEEL_SOURCE_KIND", "chitchat"),
        description="traffic source: chitchat (embedded default), folder or hf_dataset",
    )
    source_path: str | None = Field(
        default_factory=lambda: os.environ.get("FLYWHEEL_SOURCE_PATH") or None,
        description="folder of day files, or a datasets folder / hub name",
    )
    replay_end_date: str = Field(
        default_factory=lambda: _env("FLYWHEEL_REPLAY_END", "2026-01-14"),
        description="replayed sources: last day of traffic (YYYY-MM-DD)",
    )
    replay_days: int = Field(
        default_factory=lambda: int(_env("FLYWHEEL_REPLAY_DAYS", "14")),
        description="replayed sources: number of days the corpus is spread over",
    )
    internal_user_fraction: float = Field(default=0.1, description="share of users whose traffic is `internal`")
    max_text_chars: int = Field(default=20_000, description="messages longer than this are quarantined")
    late_grace_minutes: int = Field(default=120, description="minutes after midnight that still count for the day")
    production: bool = Field(
        default_factory=lambda: _env("FLYWHEEL_PRODUCTION", "0").lower() in ("1", "true", "yes"),
        description="production mode: refuses the public demo salt for user hashes",
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
        )

    def ingest_config(self) -> IngestConfig:
        return IngestConfig.for_source(
            self.source_config(), max_text_chars=self.max_text_chars, late_grace_minutes=self.late_grace_minutes
        )

    def hasher(self) -> UserHasher:
        return UserHasher.from_settings(self.user_salt, production=self.production)

    @property
    def reports_dir(self) -> Path:
        return Path(self.home) / "reports"
