"""The win-rate comparison's settings and the frames it passes along: the replies of each side, the pairs,
the per-prompt outcomes and the per-slice summary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import polars as pl

STAGE = "winrate"

PointwiseScorer = Callable[[list[str], list[str]], Sequence[float]]
PairwiseScorer = Callable[[list[str], list[str], list[str]], Any]

PAIRWISE_OUTPUTS = ("probability", "logit", "utilities")
CI_METHODS = ("BCa", "percentile", "basic")

CI_UNITS = ("user", "conversation", "prompt")
# who a prompt belongs to: optional on the replies, carried through to the outcomes for the clustered interval
CLUSTER_COLUMNS = ("user_hash", "conversation_id")
SIDE_SCHEMA = pl.Schema({"prompt_id": pl.Utf8, "slice": pl.Utf8, "context": pl.Utf8, "response": pl.Utf8})
PAIRED_SCHEMA = pl.Schema(
    {
        "prompt_id": pl.Utf8,
        "slice": pl.Utf8,
        "context": pl.Utf8,
        "response_new": pl.Utf8,
        "response_prev": pl.Utf8,
        "user_hash": pl.Utf8,
        "conversation_id": pl.Utf8,
    }
)
OUTCOME_SCHEMA = pl.Schema(
    {
        "prompt_id": pl.Utf8,
        "slice": pl.Utf8,
        "user_hash": pl.Utf8,
        "conversation_id": pl.Utf8,
        "judge": pl.Utf8,
        "kind": pl.Utf8,
        "score_new": pl.Float64,
        "score_prev": pl.Float64,
        "p_new": pl.Float64,
        "outcome": pl.Float64,
    }
)
SUMMARY_SCHEMA = pl.Schema(
    {
        "slice": pl.Utf8,
        "judge": pl.Utf8,
        "n": pl.Int64,
        "wins": pl.Int64,
        "ties": pl.Int64,
        "losses": pl.Int64,
        "win_rate": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        # the evidence behind the interval: distinct users and conversations, and the unit it resampled
        "users": pl.Int64,
        "conversations": pl.Int64,
        "unit": pl.Utf8,
        "prompt_ci_low": pl.Float64,
        "prompt_ci_high": pl.Float64,
    }
)


@dataclass
class WinRateConfig:
    slices: tuple[str, ...] = field(
        default=("eval_internal", "eval_user"),
        metadata={"help": "Slices evaluated, each on its own; prompts of other slices are dropped with a reason."},
    )
    pointwise_tie_tolerance: float = field(
        default=0.0, metadata={"help": "A pointwise judge calls a tie when |score_new - score_prev| <= this."}
    )
    pairwise_tie_tolerance: float = field(
        default=0.0, metadata={"help": "A pairwise judge calls a tie when |P(new beats prev) - 0.5| <= this."}
    )
    pairwise_output: str = field(
        default="probability",
        metadata={
            "help": "What a pairwise judge returns: 'probability' P(a beats b), 'logit' of it, or "
            "'utilities' (a pair of arrays u_a, u_b; P = sigmoid(u_a - u_b))."
        },
    )
    pairwise_both_orders: bool = field(
        default=True,
        metadata={"help": "Judge each pair as (new, prev) and (prev, new) and average, to cancel position bias."},
    )
    n_resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples per (slice, judge)."})
    confidence_level: float = field(default=0.95, metadata={"help": "Confidence level of the interval."})
    ci_method: str = field(
        default="BCa", metadata={"help": "scipy.stats.bootstrap method: 'BCa', 'percentile' or 'basic'."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap, so a re-run gives the same interval."})
    ci_unit: str = field(
        default="user",
        metadata={
            "help": "What the interval resamples: 'user' (all of a user's prompts together), 'conversation' or "
            "'prompt'; a unit the replies do not identify falls back to the next one."
        },
    )
    min_cluster_users: int = field(
        default=20,
        metadata={"help": "A slice with fewer users than this is resampled by conversation instead of by user."},
    )
    batch_size: int = field(default=256, metadata={"help": "Prompts per judge call."})

    def __post_init__(self) -> None:
        self.slices = tuple(self.slices)
        if not self.slices:
            raise ValueError("slices is empty: name at least one slice, e.g. ('eval_internal', 'eval_user')")
        for name in ("pointwise_tie_tolerance", "pairwise_tie_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.pairwise_tie_tolerance >= 0.5:
            raise ValueError("pairwise_tie_tolerance must be < 0.5, or every pair is a tie")
        if self.pairwise_output not in PAIRWISE_OUTPUTS:
            raise ValueError(f"pairwise_output={self.pairwise_output!r}: use one of {PAIRWISE_OUTPUTS}")
        if self.ci_method not in CI_METHODS:
            raise ValueError(f"ci_method={self.ci_method!r}: use one of {CI_METHODS}")
        if not 0 < self.confidence_level < 1:
            raise ValueError(f"confidence_level={self.confidence_level} must be in (0, 1), e.g. 0.95")
        if self.n_resamples < 100:
            raise ValueError(f"n_resamples={self.n_resamples} is too few for an interval: use >= 100 (default 2000)")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.ci_unit not in CI_UNITS:
            raise ValueError(f"ci_unit={self.ci_unit!r}: use one of {CI_UNITS}")
        if self.min_cluster_users < 2:
            raise ValueError(f"min_cluster_users={self.min_cluster_users} must be >= 2 (default 20)")


class WinRateResult(NamedTuple):
    summary: pl.DataFrame
    outcomes: pl.DataFrame
    drops: pl.DataFrame
