"""The A/B readout's inputs (exposures and events), its settings, and the readout it returns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

STAGE = "ab_readout"
METRICS = ("breadth", "depth")

EXPOSURES_SCHEMA = pl.Schema({"user_hash": pl.Utf8, "arm": pl.Utf8, "day": pl.Date})
EVENTS_SCHEMA = pl.Schema({"user_hash": pl.Utf8, "day": pl.Date, "messages": pl.Int64})
# one row per metric: the arms' values, the relative lift and its delta-method and bootstrap intervals
LIFTS = pl.Schema(
    {
        "metric": pl.Utf8,
        "control": pl.Float64,
        "treatment": pl.Float64,
        "lift": pl.Float64,
        "delta_se": pl.Float64,
        "delta_ci_low": pl.Float64,
        "delta_ci_high": pl.Float64,
        "delta_p_value": pl.Float64,
        "significant": pl.Boolean,
        "boot_ci_low": pl.Float64,
        "boot_ci_high": pl.Float64,
        "boot_p_value": pl.Float64,
        # simulated readouts only: the interval over the replayed conversations (resampled in pairs), since which
        # prompts were replayed is itself a sample and thousands of simulated users cannot make it larger
        "prompt_ci_low": pl.Float64,
        "prompt_ci_high": pl.Float64,
        # simulated from a model only: the spread of the lift over refits of that model on resampled training
        # users (its own estimation error), and the interval with all three sources of error together
        "model_ci_low": pl.Float64,
        "model_ci_high": pl.Float64,
        "model_sd": pl.Float64,
        "total_ci_low": pl.Float64,
        "total_ci_high": pl.Float64,
    }
)


def _as_date(value: dt.date | str | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


@dataclass
class AbConfig:
    start: dt.date | str | None = field(
        default=None, metadata={"help": "First day of the window (ISO date); default: the first exposure day."}
    )
    window_days: int = field(default=7, metadata={"help": "Length of the analysis window in days."})
    control: str = field(default="control", metadata={"help": "Name of the control arm in ab_exposures."})
    treatment: str = field(default="treatment", metadata={"help": "Name of the treatment arm in ab_exposures."})
    planned_treatment_share: float = field(
        default=0.5, metadata={"help": "Planned share of users assigned to treatment, for the sample-ratio test."}
    )
    alpha: float = field(default=0.05, metadata={"help": "1 - confidence level of the intervals; significance level."})
    srm_alpha: float = field(
        default=0.001, metadata={"help": "Sample-ratio mismatch is flagged when the chi-square p-value is below this."}
    )
    n_bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples; 0 skips the bootstrap."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})

    def __post_init__(self) -> None:
        self.start = _as_date(self.start)
        if self.window_days < 1:
            raise ValueError(f"window_days={self.window_days} must be >= 1 (e.g. 7)")
        if self.control == self.treatment:
            raise ValueError("control and treatment must name different arms")
        if not 0 < self.planned_treatment_share < 1:
            raise ValueError(f"planned_treatment_share={self.planned_treatment_share} must be in (0, 1), e.g. 0.5")
        for name in ("alpha", "srm_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in (0, 1)")
        if self.n_bootstrap != 0 and self.n_bootstrap < 200:
            raise ValueError(f"n_bootstrap={self.n_bootstrap}: use 0 (no bootstrap) or >= 200")


@dataclass
class AbReadout:
    """`lifts`: one row per metric; `arms`: per-arm counts and metric values; `srm`: the sample-ratio
    test; `users`: one row per analysed user; `drops`: rows removed, per `schema.DROPS`; `counters`:
    rows read and rows outside the analysis, by reason."""

    lifts: pl.DataFrame
    arms: pl.DataFrame
    srm: pl.DataFrame
    users: pl.DataFrame
    drops: pl.DataFrame
    counters: dict[str, int]
