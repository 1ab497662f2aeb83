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

The interval is a seeded bootstrap over the unit that was really sampled (`evaluation.winrate_intervals`);
the settings and the frames are `evaluation.winrate_config`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from evaluation.winrate_config import (
    CLUSTER_COLUMNS,
    OUTCOME_SCHEMA,
    PAIRED_SCHEMA,
    SIDE_SCHEMA,
    STAGE,
    PairwiseScorer,
    PointwiseScorer,
    WinRateConfig,
    WinRateResult,
)
from evaluation.winrate_intervals import summarize
from pipeline import schema

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
