"""The GRPO prompt pool: near-policy prompts where the policy is weak or inconsistent.

Online RL learns most where the current policy's own samples score low on average (it does badly) or spread
widely (it is inconsistent), on prompts like the ones it serves now. So the pool keeps prompts served by the
current or previous generations on recent days, and among them those at or below a quantile of mean candidate
reward or at or above a quantile of reward variance. Every other prompt is a DROPS row with its reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta

import polars as pl

from pipeline import schema
from pipeline.digest import frame_digest, rows_digest
from training.policy.dataset_lineage import (
    BuildResult,
    counts_by_reason,
    split_filter,
    to_dataset,
)
from training.policy.models import chat_messages
from training.policy.steer_data import steer_rl_rows

RL_POOL = pl.Schema(
    {
        "prompt_id": pl.Utf8,
        "prompt": pl.List(schema.MESSAGE),
        "served_by": pl.Utf8,
        "day": pl.Date,
        "n_samples": pl.Int32,
        "mean_reward": pl.Float64,
        "var_reward": pl.Float64,
        # low_mean | high_variance | both
        "reason": pl.Utf8,
    }
)


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value} must be in [0, 1]; set `{name}` to a fraction")


@dataclass
class RLPoolConfig:
    policy_names: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "served_by values that count as near-policy (current and previous "
            "generation names); empty accepts every prompt."
        },
    )
    recent_days: int | None = field(
        default=14, metadata={"help": "Keep prompts from the last N days before the newest prompt day; None keeps all."}
    )
    low_mean_quantile: float = field(
        default=0.25, metadata={"help": "A prompt is hard when its mean candidate reward is at or below this quantile."}
    )
    high_var_quantile: float = field(
        default=0.75, metadata={"help": "... or when its reward variance is at or above this quantile."}
    )
    min_samples: int = field(default=2, metadata={"help": "Scored candidates a prompt needs for a variance."})
    max_prompts: int | None = field(default=None, metadata={"help": "Cap on the pool; the lowest means go first."})
    train_splits: tuple[str, ...] = field(
        default=("train",), metadata={"help": "Prompt splits that may be trained on (when prompts have `split`)."}
    )

    def __post_init__(self) -> None:
        self.policy_names = tuple(self.policy_names)
        self.train_splits = tuple(self.train_splits)
        _fraction("low_mean_quantile", self.low_mean_quantile)
        _fraction("high_var_quantile", self.high_var_quantile)
        if self.min_samples < 2:
            raise ValueError(f"min_samples={self.min_samples} must be >= 2 (a variance needs two samples)")
        if self.recent_days is not None and self.recent_days < 1:
            raise ValueError(f"recent_days={self.recent_days} must be >= 1 or None")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ValueError(f"max_prompts={self.max_prompts} must be >= 1 or None")


def select_rl_prompts(
    prompts: pl.DataFrame,
    candidates: pl.DataFrame,
    cfg: RLPoolConfig | None = None,
    *,
    parents: dict[str, str] | None = None,
) -> BuildResult:
    """The GRPO prompt pool: a dataset with `prompt` (messages), `prompt_id` and `instructions`; frame follows
    RL_POOL.

    Training-card prompts (those with `instructions`, from `training.policy.steer_data`) all join the pool with
    their card's rules, which the GRPO rule reward checks; the near-policy selection applies to traffic prompts.
    """
    cfg = cfg or RLPoolConfig()
    stage = "rl_pool"
    prompts, drop_rows = split_filter(prompts, cfg.train_splits)
    steer_rows: list[dict] = []
    if "instructions" in prompts.columns:
        steer_rows = steer_rl_rows(prompts)
        prompts = prompts.filter(pl.col("instructions").is_null())

    def drop(frame: pl.DataFrame, reason: str, detail: pl.Expr | None = None) -> None:
        detail_col = detail.alias("detail") if detail is not None else pl.lit(None, pl.Utf8).alias("detail")
        drop_rows.extend(
            {**r, "reason_code": reason}
            for r in frame.select("day", pl.col("prompt_id").alias("row_id"), detail_col).iter_rows(named=True)
        )

    if cfg.policy_names:
        near = pl.col("served_by").is_in(list(cfg.policy_names)).fill_null(False)
        drop(prompts.filter(~near), "off_policy", pl.concat_str(pl.lit("served_by="), pl.col("served_by")))
        prompts = prompts.filter(near)
    if cfg.recent_days is not None and prompts.height:
        cutoff = prompts["day"].max() - timedelta(days=cfg.recent_days - 1)
        drop(prompts.filter(pl.col("day") < cutoff), "stale_day")
        prompts = prompts.filter(pl.col("day") >= cutoff)
    stats = (
        candidates.filter(pl.col("rm_pointwise").is_not_null())
        .group_by("prompt_id")
        .agg(
            n_samples=pl.len(), mean_reward=pl.col("rm_pointwise").mean(), var_reward=pl.col("rm_pointwise").var(ddof=0)
        )
    )
    joined = prompts.join(stats, on="prompt_id", how="left").with_columns(pl.col("n_samples").fill_null(0))
    drop(
        joined.filter(pl.col("n_samples") < cfg.min_samples),
        "too_few_samples",
        pl.concat_str(pl.lit("n_samples="), pl.col("n_samples").cast(pl.Utf8)),
    )
    joined = joined.filter(pl.col("n_samples") >= cfg.min_samples)
    # Linear interpolation: with few prompts, "nearest" would snap the cut onto a neighbour's value.
    mean_cut = joined["mean_reward"].quantile(cfg.low_mean_quantile, "linear") if joined.height else float("-inf")
    var_cut = joined["var_reward"].quantile(cfg.high_var_quantile, "linear") if joined.height else float("inf")
    low, high = pl.col("mean_reward") <= mean_cut, pl.col("var_reward") >= var_cut
    tagged = joined.with_columns(
        reason=pl.when(low & high)
        .then(pl.lit("both"))
        .when(low)
        .then(pl.lit("low_mean"))
        .when(high)
        .then(pl.lit("high_variance"))
        .otherwise(pl.lit(None, pl.Utf8))
    )
    drop(tagged.filter(pl.col("reason").is_null()), "not_hard")
    pool = tagged.filter(pl.col("reason").is_not_null()).sort(["mean_reward", "prompt_id"])
    if cfg.max_prompts is not None:
        drop(pool.slice(cfg.max_prompts), "pool_cap")
        pool = pool.head(cfg.max_prompts)
    pool = pool.sort("prompt_id")
    messages = [
        chat_messages(r["system"], r["history"]) for r in pool.select("system", "history").iter_rows(named=True)
    ]
    frame = schema.conform(pool.with_columns(prompt=pl.Series(messages, dtype=pl.List(schema.MESSAGE))), RL_POOL)
    rows = [
        {"prompt": m, "prompt_id": pid, "instructions": None}
        for m, pid in zip(messages, frame["prompt_id"].to_list(), strict=True)
    ] + steer_rows
    drops = schema.drops_frame(drop_rows, stage)
    manifest = {
        "kind": "rl_pool",
        "rows": len(rows),
        "steer_rows": len(steer_rows),
        "by_reason": {r: int((frame["reason"] == r).sum()) for r in ("low_mean", "high_variance", "both")},
        "mean_reward_cut": mean_cut,
        "var_reward_cut": var_cut,
        "drops_by_reason": counts_by_reason(drops),
        "content_hash": rows_digest(rows),
        "parents": {
            "candidates": frame_digest(candidates.select("prompt_id", "generator", "sample_idx", "rm_pointwise")),
            **(parents or {}),
        },
        "config": asdict(cfg),
    }
    return BuildResult(
        dataset=to_dataset(rows, {"prompt": "messages", "prompt_id": "string", "instructions": "string"}),
        frame=frame,
        drops=drops,
        manifest=manifest,
    )
