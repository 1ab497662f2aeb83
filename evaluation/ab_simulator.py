"""Simulated A/B logs with a planted lift, to check the readout end to end.

Each user is assigned to treatment with probability `treatment_share` and first exposed on a day drawn
uniformly from the first `exposure_days` days of the window. They engage (send at least one message
between exposure and the end of the window) with probability `base_breadth` in control and
`base_breadth * (1 + lift_breadth)` in treatment. An engaged user sends 1 + NB messages, NB a negative
binomial with shape `dispersion` (small = heavy overdispersion, as real chat counts are), with mean
messages per engaged user `base_depth` in control and `base_depth * (1 + lift_depth)` in treatment;
their messages fall on uniformly drawn days from exposure to the end of the window.

So the population lifts the readout estimates are exactly `lift_breadth` and `lift_depth` (`truth()`):
breadth is P(engaged) and depth is E[messages | engaged] in each arm.

Realistic noise the readout must ignore: repeated exposure rows, activity before a user's first
exposure (including before the window) and after the window, and events of users never exposed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from evaluation.ab_config import EVENTS_SCHEMA, EXPOSURES_SCHEMA


@dataclass
class ExperimentConfig:
    """Who is exposed when, and the logging noise the readout must ignore: shared by every simulator that writes
    A/B logs (this planted-lift one and the simulated experiment of `evaluation.simulated_ab`)."""

    n_users: int = field(default=20_000, metadata={"help": "Users exposed to the experiment."})
    treatment_share: float = field(default=0.5, metadata={"help": "Probability a user is assigned to treatment."})
    window_days: int = field(default=7, metadata={"help": "Days in the experiment window."})
    exposure_days: int = field(default=3, metadata={"help": "First exposures fall on the first this-many days."})
    start: str = field(default="2024-01-01", metadata={"help": "First day of the window (ISO date)."})
    repeat_exposure_rate: float = field(default=0.5, metadata={"help": "Share of users logged again on a later day."})
    noise_event_rate: float = field(
        default=0.2,
        metadata={"help": "Share of users with activity outside the analysis (before exposure or after the window)."},
    )
    unexposed_users: int = field(default=500, metadata={"help": "Users with events but no exposure."})
    control: str = field(default="control", metadata={"help": "Control arm name."})
    treatment: str = field(default="treatment", metadata={"help": "Treatment arm name."})
    seed: int = field(default=0, metadata={"help": "Seed of the simulation."})

    def __post_init__(self) -> None:
        if self.n_users < 2:
            raise ValueError("n_users must be >= 2")
        if not 0 < self.treatment_share < 1:
            raise ValueError(f"treatment_share={self.treatment_share} must be in (0, 1)")
        if not 1 <= self.exposure_days <= self.window_days:
            raise ValueError("exposure_days must be in [1, window_days]")
        for name in ("repeat_exposure_rate", "noise_event_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.control == self.treatment:
            raise ValueError("control and treatment must name different arms")
        dt.date.fromisoformat(self.start)


@dataclass
class AbSimConfig(ExperimentConfig):
    base_breadth: float = field(default=0.3, metadata={"help": "Share of control users who engage in the window."})
    base_depth: float = field(default=6.0, metadata={"help": "Mean messages per engaged control user (> 1)."})
    dispersion: float = field(
        default=0.8,
        metadata={"help": "Negative-binomial shape of messages beyond the first; smaller = more overdispersed."},
    )
    lift_breadth: float = field(default=0.05, metadata={"help": "Planted relative lift of breadth in treatment."})
    lift_depth: float = field(default=0.03, metadata={"help": "Planted relative lift of depth in treatment."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.base_breadth < 1 or not 0 < self.base_breadth * (1 + self.lift_breadth) <= 1:
            raise ValueError("base_breadth and base_breadth * (1 + lift_breadth) must be probabilities in (0, 1]")
        if self.base_depth <= 1 or self.base_depth * (1 + self.lift_depth) <= 1:
            raise ValueError("base_depth and base_depth * (1 + lift_depth) must exceed 1 (engaged users send >= 1)")
        if self.dispersion <= 0:
            raise ValueError("dispersion must be > 0")

    def truth(self) -> dict[str, float]:
        """The population lifts the simulation plants: the estimands of the readout."""
        return {"breadth": self.lift_breadth, "depth": self.lift_depth}


def _messages(rng: np.random.Generator, mean: np.ndarray, shape: float) -> np.ndarray:
    # 1 + NB with mean (mean - 1): numpy's negative_binomial(n, p) has mean n (1 - p) / p.
    p = shape / (shape + mean - 1)
    return 1 + rng.negative_binomial(shape, p)


def simulate_users(config: AbSimConfig | None = None, reps: int | None = None) -> dict[str, np.ndarray]:
    """Per-user outcomes of the generative model: `treated`, `first_day` (offset in the window) and
    `messages` in the analysis window. With `reps`, arrays have a leading axis of `reps` independent
    experiments (what a coverage study needs, without writing logs)."""
    c = config or AbSimConfig()
    rng = np.random.default_rng(c.seed)
    shape = (c.n_users,) if reps is None else (reps, c.n_users)
    treated = rng.random(shape) < c.treatment_share
    first = rng.integers(0, c.exposure_days, shape)
    breadth = np.where(treated, c.base_breadth * (1 + c.lift_breadth), c.base_breadth)
    depth = np.where(treated, c.base_depth * (1 + c.lift_depth), c.base_depth)
    engaged = rng.random(shape) < breadth
    messages = np.where(engaged, _messages(rng, depth, c.dispersion), 0)
    return {"treated": treated, "first_day": first, "messages": messages, "rng": rng}


def simulate_ab_logs(config: AbSimConfig | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(ab_exposures, ab_events) frames of one experiment."""
    c = config or AbSimConfig()
    return experiment_logs(simulate_users(c), c)


def experiment_logs(sim: dict[str, np.ndarray], c: ExperimentConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(ab_exposures, ab_events) of simulated users (`treated`, `first_day`, `messages` and the `rng` that drew
    them), with the logging noise of `c`: each message on a day drawn uniformly from exposure to the window's end."""
    treat, first, msgs, rng = sim["treated"], sim["first_day"], sim["messages"], sim["rng"]
    start = dt.date.fromisoformat(c.start)
    n = c.n_users
    users = np.array([f"u_{c.seed}_{i:07d}" for i in range(n)])
    arm = np.where(treat, c.treatment, c.control)
    again = rng.random(n) < c.repeat_exposure_rate
    again_day = first + rng.integers(0, c.window_days, n)  # may fall after the window: ignored there
    exposures = _dated(
        pl.DataFrame(
            {
                "user_hash": np.concatenate([users, users[again]]),
                "arm": np.concatenate([arm, arm[again]]),
                "d": np.concatenate([first, again_day[again]]),
            }
        ),
        start,
        EXPOSURES_SCHEMA,
    )

    # every message falls on a day drawn uniformly from exposure to the end of the window
    owner = np.repeat(np.arange(n), msgs)
    span = c.window_days - first[owner]
    day = first[owner] + (rng.random(owner.size) * span).astype(np.int64)
    counted = pl.DataFrame({"u": owner, "d": day}).group_by("u", "d").agg(pl.len().cast(pl.Int64).alias("messages"))

    # activity the readout must not count: before the first exposure (maybe before the window), or after it
    noisy = np.flatnonzero(rng.random(n) < c.noise_event_rate)
    before = rng.random(noisy.size) < 0.5
    noise_day = np.where(
        before, first[noisy] - 1 - rng.integers(0, 3, noisy.size), c.window_days + rng.integers(0, 3, noisy.size)
    )
    noise = pl.DataFrame({"u": noisy, "d": noise_day, "messages": 1 + rng.poisson(3, noisy.size)})
    own = pl.concat([counted, noise.cast({"messages": pl.Int64})])
    ghosts = pl.DataFrame(
        {
            "user_hash": [f"ghost_{c.seed}_{i:05d}" for i in range(c.unexposed_users)],
            "d": rng.integers(0, c.window_days, c.unexposed_users),
            "messages": 1 + rng.poisson(3, c.unexposed_users),
        }
    )
    events = pl.concat(
        [
            own.select(pl.Series("user_hash", users[own["u"].to_numpy()]), "d", "messages"),
            ghosts.cast({"messages": pl.Int64}),
        ]
    )
    return exposures, _dated(events, start, EVENTS_SCHEMA).sort("user_hash", "day")


def _dated(df: pl.DataFrame, start: dt.date, target: pl.Schema) -> pl.DataFrame:
    day = (pl.lit(start) + pl.duration(days=pl.col("d"))).cast(pl.Date).alias("day")
    return df.with_columns(day).select([pl.col(k).cast(v) for k, v in target.items()])
