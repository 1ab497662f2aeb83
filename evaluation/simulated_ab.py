"""The simulated A/B experiment: users who act on the continue probabilities that the engagement model
(`evaluation.user_simulator`) gives each arm's replies, and the readout of their logs.

The planted-lift simulator (`evaluation.ab_simulator`) plants a lift that does not depend on the models at
all; it stays as the readout's calibration check. Here the lift moves only when the replies do.

The simulated experiment (`simulate_arm_users`): each user is assigned to treatment with probability
`treatment_share`, exposed on one of the first `exposure_days` days, and lands in one replayed held-out
conversation drawn uniformly. They see their arm's reply there and continue with its probability p (the
engagement model's score, re-centred so a reply scored at the logs' base rate continues with probability
`base_continue`: logged chat continues after nearly every turn): that first continuation is one message, and makes them *engaged* (breadth). An
engaged user keeps talking with the same probability p after every turn, so sends a geometric number of
messages with mean 1 / (1 - p) (capped at `max_messages`): the depth. So breadth is the mean of p over an
arm's replies and depth the mean of 1 / (1 - p) over its engaged users: both move only when the replies do.
Identical arms give identical distributions, so the readout's false-positive rate is its nominal alpha.

The simulator is itself an estimate: another sample of its training users would give other probabilities and
another lift. `simulated_readout` refits it on `refits` bootstrap resamples of its training users (whole users,
with all their turns) and reads the spread of the lifts they imply (`model_ci_*`); `total_ci_*` adds that
variance to the readout's own and the replayed prompts' (all three are independent sources of error). A
simulator that learnt from fewer than `min_users` users gives the readout insufficient evidence
(`evidence()`): its verdict is then `insufficient`, which neither ships nor rejects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
from scipy import stats

from evaluation import ab_test
from evaluation.ab_simulator import ExperimentConfig, experiment_logs
from evaluation.user_simulator import UserSimulator
from pipeline import schema


@dataclass
class SimulatedAbConfig(ExperimentConfig):
    max_messages: int = field(default=60, metadata={"help": "Cap on the messages one simulated user sends."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_messages < 1:
            raise ValueError(f"max_messages={self.max_messages} must be >= 1")


def simulate_arm_users(
    p_control: np.ndarray, p_treatment: np.ndarray, config: SimulatedAbConfig | None = None, reps: int | None = None
) -> dict[str, np.ndarray]:
    """Per-user `treated`, `first_day`, `conversation` (index into the arm's replies), `p` and `messages` of the
    simulated experiment (module docstring); `p_control[i]` and `p_treatment[i]` score the two arms' replies
    to replayed conversation i. With `reps`, arrays gain a leading axis of independent experiments."""
    c = config or SimulatedAbConfig()
    p_control, p_treatment = np.asarray(p_control, np.float64), np.asarray(p_treatment, np.float64)
    if p_control.shape != p_treatment.shape or p_control.ndim != 1 or not p_control.size:
        raise ValueError("p_control and p_treatment must score the same non-empty list of replayed conversations")
    if not ((0 <= p_control) & (p_control < 1) & (0 <= p_treatment) & (p_treatment < 1)).all():
        raise ValueError("continue probabilities must lie in [0, 1)")
    rng = np.random.default_rng(c.seed)
    shape = (c.n_users,) if reps is None else (reps, c.n_users)
    treated = rng.random(shape) < c.treatment_share
    first = rng.integers(0, c.exposure_days, shape)
    conversation = rng.integers(0, p_control.size, shape)
    p = np.where(treated, p_treatment[conversation], p_control[conversation])
    engaged = rng.random(shape) < p
    # messages until the first turn they do not continue after: geometric with stop probability 1 - p
    messages = np.where(engaged, np.minimum(rng.geometric(1 - p), c.max_messages), 0)
    return {
        "treated": treated,
        "first_day": first,
        "conversation": conversation,
        "p": p,
        "messages": messages,
        "rng": rng,
    }


def simulated_logs(
    p_control: np.ndarray, p_treatment: np.ndarray, config: SimulatedAbConfig | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(ab_exposures, ab_events) of one simulated experiment, with the logging noise the readout must ignore."""
    c = config or SimulatedAbConfig()
    return experiment_logs(simulate_arm_users(p_control, p_treatment, c), c)


def _lift_statistics(max_messages: int):
    """Breadth and depth lift of treatment over control from per-conversation continue probabilities, along
    `axis` (so scipy's bootstrap can evaluate many resamples at once)."""

    def depth(p: np.ndarray, axis: int) -> np.ndarray:
        # E[min(G, m)] for G geometric with stop probability 1 - p is (1 - p^m) / (1 - p), weighted by P(engaged) = p
        return (p * (1 - p**max_messages) / (1 - p)).sum(axis=axis) / p.sum(axis=axis)

    return {
        "breadth": lambda pc, pt, axis=-1: pt.mean(axis=axis) / pc.mean(axis=axis) - 1,
        "depth": lambda pc, pt, axis=-1: depth(pt, axis) / depth(pc, axis) - 1,
    }


def expected_lifts(p_control: np.ndarray, p_treatment: np.ndarray, max_messages: int = 60) -> dict[str, float]:
    """The population breadth and depth lifts the simulated experiment estimates (what an infinite one reads)."""
    pc, pt = np.asarray(p_control, np.float64), np.asarray(p_treatment, np.float64)
    return {m: float(f(pc, pt)) for m, f in _lift_statistics(max_messages).items()}


def prompt_intervals(
    p_control: np.ndarray,
    p_treatment: np.ndarray,
    max_messages: int = 60,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, tuple[float | None, float | None]]:
    """Per metric, the (1 - alpha) percentile interval of the expected lift over the replayed conversations,
    resampled in pairs (scipy.stats.bootstrap): how far the lift could move had other held-out conversations been
    replayed. (None, None) with fewer than two conversations or no resamples."""
    pc, pt = np.asarray(p_control, np.float64), np.asarray(p_treatment, np.float64)
    if pc.size < 2 or n_resamples < 1:
        return {m: (None, None) for m in _lift_statistics(max_messages)}
    out = {}
    for metric, statistic in _lift_statistics(max_messages).items():
        res = stats.bootstrap(
            (pc, pt),
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=1 - alpha,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        out[metric] = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    return out


def last_user_turn(context_json: str | None) -> str:
    """The last user message of a JSON list of chat messages (the eval replies' `context`)."""
    messages = json.loads(context_json) if context_json else []
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


@dataclass
class ArmReplies:
    """Each arm's reply to the same replayed held-out conversations, with the user turn they answer."""

    conversation: list[str]
    context: list[str]
    control: list[str]
    treatment: list[str]

    @classmethod
    def from_responses(cls, responses: pl.DataFrame, control: str, treatment: str) -> ArmReplies:
        """From rows (prompt_id, policy, context, response): the prompts both policies answered, in id order."""
        arms = []
        for policy in (control, treatment):
            arm = responses.filter(pl.col("policy") == policy).unique("prompt_id", keep="first")
            arms.append(arm.select("prompt_id", "context", pl.col("response").alias(policy)))
        both = arms[0].join(arms[1].drop("context"), on="prompt_id", how="inner").sort("prompt_id")
        if both.is_empty():
            raise ValueError(
                f"no replayed conversation has replies of both {control!r} and {treatment!r}: run the offline "
                "evaluation of this generation first"
            )
        return cls(
            conversation=both["prompt_id"].to_list(),
            context=[last_user_turn(c) for c in both["context"]],
            control=both[control].fill_null("").to_list(),
            treatment=both[treatment].fill_null("").to_list(),
        )


@dataclass
class SimulatedReadout:
    """The A/B logs simulated from `model` (its name), their readout, the per-conversation continue
    probabilities and the population lifts those imply (`expected`)."""

    model: str
    exposures: pl.DataFrame
    events: pl.DataFrame
    readout: ab_test.AbReadout
    scores: pl.DataFrame
    expected: dict[str, float]
    evidence: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"simulated from {self.model}"


def simulated_readout(
    simulator: UserSimulator, replies: ArmReplies, experiment: SimulatedAbConfig, analysis: ab_test.AbConfig
) -> SimulatedReadout:
    """Score both arms' replies, simulate the experiment on those probabilities and read it out like real logs
    (breadth and depth lifts, delta-method and bootstrap intervals, sample-ratio test)."""
    p_c = simulator.p_continue(replies.context, replies.control)
    p_t = simulator.p_continue(replies.context, replies.treatment)
    exposures, events = simulated_logs(p_c, p_t, experiment)
    readout = ab_test.ab_readout(exposures, events, analysis)
    intervals = prompt_intervals(p_c, p_t, experiment.max_messages, analysis.n_bootstrap, analysis.alpha, analysis.seed)
    found = pl.DataFrame(
        [{"metric": m, "prompt_ci_low": lo, "prompt_ci_high": hi} for m, (lo, hi) in intervals.items()],
        schema={"metric": pl.Utf8, "prompt_ci_low": pl.Float64, "prompt_ci_high": pl.Float64},
    )
    refitted = [
        expected_lifts(
            r.p_continue(replies.context, replies.control),
            r.p_continue(replies.context, replies.treatment),
            experiment.max_messages,
        )
        for r in simulator.refits()
    ]
    found = found.join(_model_error(refitted, analysis.alpha), on="metric", how="left")
    lifts = readout.lifts.update(found, on="metric")
    readout = replace(readout, lifts=lifts.with_columns(_total_interval(lifts, analysis.alpha)))
    scores = pl.DataFrame({"prompt_id": replies.conversation, "p_continue_control": p_c, "p_continue_treatment": p_t})
    evidence = {**simulator.evidence(), "refits": len(refitted), "conversations": len(replies.conversation)}
    return SimulatedReadout(
        simulator.name, exposures, events, readout, scores, expected_lifts(p_c, p_t, experiment.max_messages), evidence
    )


def _model_error(refitted: list[dict[str, float]], alpha: float) -> pl.DataFrame:
    """Per metric, the percentile interval and standard deviation of the lifts the refitted simulators imply."""
    rows = []
    for metric in ab_test.METRICS:
        values = np.array([r[metric] for r in refitted if np.isfinite(r[metric])])
        if values.size < 2:
            rows.append({"metric": metric})
            continue
        lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        rows.append({"metric": metric, "model_ci_low": lo, "model_ci_high": hi, "model_sd": float(values.std(ddof=1))})
    schema = {"metric": pl.Utf8, "model_ci_low": pl.Float64, "model_ci_high": pl.Float64, "model_sd": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _total_interval(lifts: pl.DataFrame, alpha: float) -> list[pl.Expr]:
    """The lift's interval with every source of error: the simulated users' (delta method), the replayed
    prompts' and the simulator's own, as independent variances (each read off its interval or deviation)."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    prompt_se = (pl.col("prompt_ci_high") - pl.col("prompt_ci_low")).fill_null(0.0) / (2 * z)
    model_se = pl.col("model_sd").fill_null(0.0) if "model_sd" in lifts.columns else pl.lit(0.0)
    se = (pl.col("delta_se") ** 2 + prompt_se**2 + model_se**2).sqrt()
    return [(pl.col("lift") - z * se).alias("total_ci_low"), (pl.col("lift") + z * se).alias("total_ci_high")]


def no_readout(analysis: ab_test.AbConfig) -> ab_test.AbReadout:
    """The readout of an experiment that could not be simulated (the traffic trained no user simulator): both arms
    without users, a row per metric without a lift; with the simulator's reason `ab_test.ab_decision` calls it
    insufficient evidence, which neither ships nor rejects."""
    users = pl.DataFrame(schema={"user_hash": pl.Utf8, "arm": pl.Utf8, "messages": pl.Int64})
    lifts, arms, srm = ab_test.analyze(users, analysis)
    return ab_test.AbReadout(lifts, arms, srm, users, schema.empty(schema.DROPS), {"users_simulated": 0})
