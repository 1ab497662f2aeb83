"""Win rate of a new generation against the previous one, on identical held-out prompts.

Both generations answer the same held-out prompts; judges compare the two replies prompt by prompt:

- a *pointwise* judge scores each (context, reply) on its own (the engagement reward model): the new
  reply wins when its score beats the previous one's by more than `pointwise_tie_tolerance`, loses
  when it trails by more, and ties otherwise;
- a *pairwise* judge gives P(a beats b) for (context, a, b) (the Bradley-Terry preference model),
  either directly, as a logit, or as two utilities (P = sigmoid(u_a - u_b)). Each pair is judged in
  both orders and the two verdicts averaged, which cancels a judge's position bias; the new reply wins
  when P(new beats previous) exceeds 1/2 by more than `pairwise_tie_tolerance`.

A win counts 1, a tie 1/2, a loss 0; the win rate of a slice is their mean. Slices are evaluated
separately (`eval_internal`: prompts from internal testers; `eval_user`: real user traffic) because a
gap between them is itself a warning sign.

The interval is a seeded bootstrap (scipy.stats.bootstrap, BCa by default) over the unit that was really
sampled: held-out *users*, each with all their prompts, since one user's prompts share their taste and
their conversations and are not independent draws. A slice with fewer than `min_cluster_users` users is
resampled by conversation instead (a handful of users gives no interval worth the name; the release gates
call such a slice insufficient evidence), and replies without user or conversation ids by prompt. The
summary says which unit each interval resampled (`unit`), how many users, conversations and prompts
stand behind it, and the prompt-level interval next to it (`prompt_ci_*`), whose narrowness shows how
much an interval over prompts would overstate the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import polars as pl
from scipy import stats

from pipeline import schema

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


_drop = partial(schema.drop_row, STAGE)


def pair_generations(
    new: pl.DataFrame, prev: pl.DataFrame, config: WinRateConfig | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Join the two generations' replies (prompt_id, slice, context, response) on prompt_id.

    Only prompts both generations answered with the same context are compared; the rest are dropped
    with a reason (missing in one generation, duplicate id, context mismatch, null reply, slice not
    evaluated), so the two sides are always judged on identical prompts."""
    config = config or WinRateConfig()
    drops: list[dict[str, Any]] = []
    sides = {}
    for tag, df in (("new", new), ("prev", prev)):
        df = schema.conform(df, SIDE_SCHEMA)
        dup = df.filter(pl.col("prompt_id").is_duplicated())
        drops += [
            _drop(pid, f"duplicate_prompt_{tag}", "prompt_id appears more than once")
            for pid in dup["prompt_id"].unique().sort().to_list()
        ]
        sides[tag] = df.filter(~pl.col("prompt_id").is_duplicated()).with_columns(pl.lit(True).alias(f"_in_{tag}"))
    owners = _owners(new)
    joined = sides["new"].join(sides["prev"], on="prompt_id", how="full", suffix="_prev", coalesce=True)
    out = []
    for r in joined.iter_rows(named=True):
        pid = r["prompt_id"]
        if not r["_in_new"]:
            drops.append(_drop(pid, "missing_in_new", "only the previous generation answered this prompt"))
        elif not r["_in_prev"]:
            drops.append(_drop(pid, "missing_in_prev", "only the new generation answered this prompt"))
        elif r["context"] != r["context_prev"] or r["slice"] != r["slice_prev"]:
            drops.append(_drop(pid, "context_mismatch", "the generations saw different contexts or slices"))
        elif r["response"] is None or r["response_prev"] is None:
            drops.append(_drop(pid, "null_response", "a generation has no reply for this prompt"))
        elif r["slice"] not in config.slices:
            drops.append(_drop(pid, "slice_not_evaluated", f"slice {r['slice']!r} not in {config.slices}"))
        else:
            out.append(
                {
                    "prompt_id": pid,
                    "slice": r["slice"],
                    "context": r["context"],
                    "response_new": r["response"],
                    "response_prev": r["response_prev"],
                }
            )
    paired = pl.DataFrame(out).join(owners, on="prompt_id", how="left") if out else pl.DataFrame()
    paired = (paired if out else pl.DataFrame(schema=PAIRED_SCHEMA)).select(PAIRED_SCHEMA.names())
    return paired.cast(dict(PAIRED_SCHEMA)).sort("slice", "prompt_id"), schema.drops_frame(drops)


def _owners(side: pl.DataFrame) -> pl.DataFrame:
    """prompt_id -> user_hash, conversation_id of the new side's replies (null where it does not say)."""
    cols = [pl.col(c).cast(pl.Utf8) if c in side.columns else pl.lit(None, pl.Utf8).alias(c) for c in CLUSTER_COLUMNS]
    return side.select(pl.col("prompt_id").cast(pl.Utf8), *cols).unique("prompt_id", keep="first")


def _batched(fn: Callable[..., Any], cols: list[list[str]], batch: int, pairs: bool = False):
    n = len(cols[0])
    outs = []
    for start in range(0, n, batch):
        res = fn(*[c[start : start + batch] for c in cols])
        outs.append(tuple(np.asarray(x, dtype=np.float64) for x in res) if pairs else np.asarray(res, dtype=np.float64))
    if pairs:
        return tuple(np.concatenate([o[i] for o in outs]) if outs else np.zeros(0) for i in range(2))
    return np.concatenate(outs) if outs else np.zeros(0)


def _check_len(x: np.ndarray, n: int, judge: str) -> np.ndarray:
    if x.shape != (n,):
        raise ValueError(f"judge {judge!r} returned shape {x.shape} for {n} items: return one number per item")
    return x


def _p_new(judge: str, fn: PairwiseScorer, ctx: list[str], a: list[str], b: list[str], config: WinRateConfig):
    def prob(x: list[str], y: list[str]) -> np.ndarray:
        if config.pairwise_output == "utilities":
            ua, ub = _batched(fn, [ctx, x, y], config.batch_size, pairs=True)
            return 1.0 / (1.0 + np.exp(-(_check_len(ua, len(ctx), judge) - _check_len(ub, len(ctx), judge))))
        out = _check_len(_batched(fn, [ctx, x, y], config.batch_size), len(ctx), judge)
        return 1.0 / (1.0 + np.exp(-out)) if config.pairwise_output == "logit" else out

    p = prob(a, b)
    if config.pairwise_both_orders:
        p = 0.5 * (p + (1.0 - prob(b, a)))
    return p


def _as_named(judges: Mapping[str, Callable] | Callable | None, default: str) -> dict[str, Callable]:
    if judges is None:
        return {}
    return dict(judges) if isinstance(judges, Mapping) else {default: judges}


def judge_outcomes(
    paired: pl.DataFrame,
    pointwise: Mapping[str, PointwiseScorer] | PointwiseScorer | None = None,
    pairwise: Mapping[str, PairwiseScorer] | PairwiseScorer | None = None,
    config: WinRateConfig | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per prompt and judge: the scores and the outcome (1 win, 0.5 tie, 0 loss) of the new reply.
    A judge output that is NaN or out of range drops that prompt for that judge, with a reason."""
    config = config or WinRateConfig()
    ctx = paired["context"].to_list()
    new, prev = paired["response_new"].to_list(), paired["response_prev"].to_list()
    base = paired.select("prompt_id", "slice", *CLUSTER_COLUMNS)
    frames, drops = [], []
    for name, fn in _as_named(pointwise, "pointwise").items():
        s_new = _check_len(_batched(fn, [ctx, new], config.batch_size), len(ctx), name)
        s_prev = _check_len(_batched(fn, [ctx, prev], config.batch_size), len(ctx), name)
        diff = s_new - s_prev
        outcome = np.where(np.abs(diff) <= config.pointwise_tie_tolerance, 0.5, (diff > 0).astype(np.float64))
        frames.append(
            base.with_columns(
                pl.lit(name).alias("judge"),
                pl.lit("pointwise").alias("kind"),
                pl.Series("score_new", s_new),
                pl.Series("score_prev", s_prev),
                pl.lit(None, pl.Float64).alias("p_new"),
                pl.Series("outcome", np.where(np.isfinite(diff), outcome, np.nan)),
            )
        )
    for name, fn in _as_named(pairwise, "pairwise").items():
        p = _p_new(name, fn, ctx, new, prev, config)
        dev = p - 0.5
        outcome = np.where(np.abs(dev) <= config.pairwise_tie_tolerance, 0.5, (dev > 0).astype(np.float64))
        valid = np.isfinite(p) & (p >= 0) & (p <= 1)
        frames.append(
            base.with_columns(
                pl.lit(name).alias("judge"),
                pl.lit("pairwise").alias("kind"),
                pl.lit(None, pl.Float64).alias("score_new"),
                pl.lit(None, pl.Float64).alias("score_prev"),
                pl.Series("p_new", p),
                pl.Series("outcome", np.where(valid, outcome, np.nan)),
            )
        )
    if not frames:
        raise ValueError("no judge given: pass a pointwise and/or a pairwise scorer")
    outcomes = pl.concat([f.cast(dict(OUTCOME_SCHEMA)).select(OUTCOME_SCHEMA.names()) for f in frames])
    bad = outcomes.filter(pl.col("outcome").is_nan())
    drops += [
        _drop(
            r["prompt_id"], "judge_invalid_output", f"judge {r['judge']} returned NaN or a probability outside [0, 1]"
        )
        for r in bad.iter_rows(named=True)
    ]
    return outcomes.filter(~pl.col("outcome").is_nan()), schema.drops_frame(drops)


def bootstrap_ci(values: np.ndarray, config: WinRateConfig, rng: np.random.Generator) -> tuple[float, float]:
    """Interval of the mean of `values`; a constant sample has the degenerate interval [v, v]."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan"), float("nan")
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    res = stats.bootstrap(
        (values,),
        np.mean,
        vectorized=True,
        n_resamples=config.n_resamples,
        confidence_level=config.confidence_level,
        method=config.ci_method,
        random_state=rng,
        batch=500,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def cluster_bootstrap_ci(
    values: np.ndarray, clusters: np.ndarray, config: WinRateConfig, rng: np.random.Generator
) -> tuple[float, float]:
    """Interval of the mean of `values` when whole clusters (users, conversations) were sampled: the
    clusters are resampled with all their values (the ratio of summed outcomes to summed prompts). One
    value per cluster is the plain bootstrap over values."""
    values = np.asarray(values, dtype=np.float64)
    _, owner = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    k = int(owner.max()) + 1 if owner.size else 0
    if k == values.size:
        return bootstrap_ci(values, config, rng)
    if values.size and np.all(values == values[0]):
        return float(values[0]), float(values[0])
    if k < 2:
        return float("nan"), float("nan")
    sums = np.bincount(owner, weights=values, minlength=k)
    counts = np.bincount(owner, minlength=k).astype(np.float64)

    def ratio(s: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return s.sum(axis=axis) / c.sum(axis=axis)

    for method in dict.fromkeys((config.ci_method, "percentile")):  # BCa is undefined on a degenerate jackknife
        res = stats.bootstrap(
            (sums, counts),
            ratio,
            paired=True,
            vectorized=True,
            n_resamples=config.n_resamples,
            confidence_level=config.confidence_level,
            method=method,
            random_state=rng,
            batch=500,
        )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            break
    return low, high


def _cluster_ids(o: pl.DataFrame, config: WinRateConfig) -> tuple[str, np.ndarray, int, int]:
    """(unit, cluster id per prompt, users, conversations) of one slice's outcomes: by user when it has at
    least `min_cluster_users` of them, else by conversation, else by prompt; a prompt without an id of the
    chosen unit is its own cluster."""
    ids = {c: (o[c] if c in o.columns else pl.Series(c, [None] * o.height, pl.Utf8)) for c in CLUSTER_COLUMNS}
    # None: the replies do not say who they belong to
    users, conversations = (ids[c].drop_nulls().n_unique() or None for c in CLUSTER_COLUMNS)
    order = CI_UNITS[CI_UNITS.index(config.ci_unit) :]
    unit = "prompt"
    if "user" in order and (users or 0) >= config.min_cluster_users:
        unit = "user"
    elif "conversation" in order and (conversations or 0) >= 2:
        unit = "conversation"
    if unit == "prompt":
        return unit, o["prompt_id"].to_numpy(), users, conversations
    column = ids["user_hash" if unit == "user" else "conversation_id"]
    own = [c if c is not None else f"prompt:{p}" for c, p in zip(column.to_list(), o["prompt_id"].to_list())]
    return unit, np.array(own, dtype=object), users, conversations


def summarize(outcomes: pl.DataFrame, config: WinRateConfig | None = None) -> pl.DataFrame:
    """(slice, judge, n, wins, ties, losses, win_rate, ci_low, ci_high, users, conversations, unit,
    prompt_ci_low, prompt_ci_high), one row per configured slice and judge; a slice with no prompts gets
    n = 0 and null rates. `ci_*` resample `unit` (see the module docstring), `prompt_ci_*` the prompts."""
    config = config or WinRateConfig()
    rng = np.random.default_rng(config.seed)
    rows = []
    judges = outcomes["judge"].unique(maintain_order=True).to_list()
    for slice_name in config.slices:
        for judge in judges:
            part = outcomes.filter((pl.col("slice") == slice_name) & (pl.col("judge") == judge))
            o = part["outcome"].to_numpy()
            unit, clusters, users, conversations = _cluster_ids(part, config)
            lo, hi = bootstrap_ci(o, config, rng) if o.size else (None, None)
            plo, phi = lo, hi
            if o.size and unit != "prompt":
                lo, hi = cluster_bootstrap_ci(o, clusters, config, rng)
            rows.append(
                {
                    "slice": slice_name,
                    "judge": judge,
                    "n": int(o.size),
                    "wins": int((o == 1).sum()),
                    "ties": int((o == 0.5).sum()),
                    "losses": int((o == 0).sum()),
                    "win_rate": float(o.mean()) if o.size else None,
                    "ci_low": lo,
                    "ci_high": hi,
                    "users": users,
                    "conversations": conversations,
                    "unit": unit if o.size else None,
                    "prompt_ci_low": plo,
                    "prompt_ci_high": phi,
                }
            )
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


EVAL_RECORDS_SCHEMA = pl.Schema(
    {"generation": pl.Utf8, "slice": pl.Utf8, "prompt_id": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64}
)


def eval_records(outcomes: pl.DataFrame, generation: str) -> pl.DataFrame:
    """Outcomes as `eval_records` rows (generation, slice, prompt_id, metric='winrate/<judge>', value)."""
    return outcomes.select(
        pl.lit(generation).alias("generation"),
        "slice",
        "prompt_id",
        pl.format("winrate/{}", pl.col("judge")).alias("metric"),
        pl.col("outcome").alias("value"),
    ).cast(dict(EVAL_RECORDS_SCHEMA))


def win_rate(
    new: pl.DataFrame,
    prev: pl.DataFrame,
    pointwise: Mapping[str, PointwiseScorer] | PointwiseScorer | None = None,
    pairwise: Mapping[str, PairwiseScorer] | PairwiseScorer | None = None,
    config: WinRateConfig | None = None,
) -> WinRateResult:
    """Pair the generations' replies, judge every pair with every judge, and summarize per slice."""
    config = config or WinRateConfig()
    paired, pair_drops = pair_generations(new, prev, config)
    outcomes, judge_drops = judge_outcomes(paired, pointwise, pairwise, config)
    return WinRateResult(summarize(outcomes, config), outcomes, pl.concat([pair_drops, judge_drops]))
