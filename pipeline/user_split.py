"""Which users are held out for evaluation, and the held-out prompts evaluation reads.

The split is a function of the salted user hash alone, so a user is on the same side every day
and never on both. Raising `eval_fraction` only moves users from train into evaluation.
Held-out users' prompts are `eval_internal` when their source is `internal`, else `eval_user`.
Prompts with no user hash cannot be held out reliably and go to train.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import polars as pl

from pipeline.seeded_uniform import seeded_uniforms

SPLITS = ("train", "eval_internal", "eval_user")


class SplitSettings(Protocol):
    """What the split reads of `pipeline.sampling.SamplingConfig`."""

    eval_fraction: float
    internal_eval_fraction: float
    split_salt: str


def assign_split(user_hash: pl.Series, source: pl.Series, config: SplitSettings) -> pl.Series:
    """train / eval_internal / eval_user per row, from the user hash and whether the user is internal
    (`internal_eval_fraction` of internal users, `eval_fraction` of the others, are held out)."""
    users = user_hash.cast(pl.Utf8)
    # a user with any internal traffic is an internal user: the held-out share depends on it
    kinds = (
        pl.DataFrame({"_user": users, "_internal": source.cast(pl.Utf8) == "internal"})
        .drop_nulls("_user")
        .group_by("_user")
        .agg(pl.col("_internal").fill_null(False).any())
        .sort("_user")
    )
    u = seeded_uniforms(kinds["_user"].to_list(), config.split_salt)
    threshold = np.where(kinds["_internal"].to_numpy(), config.internal_eval_fraction, config.eval_fraction)
    held = pl.DataFrame({"_user": kinds["_user"], "_held": u < threshold})
    flags = pl.DataFrame({"_user": users}).join(held, on="_user", how="left", maintain_order="left")["_held"]
    frame = pl.DataFrame({"_held": flags.fill_null(False), "_source": source.cast(pl.Utf8)})
    return frame.select(
        pl.when(~pl.col("_held"))
        .then(pl.lit("train"))
        .when(pl.col("_source") == "internal")
        .then(pl.lit("eval_internal"))
        .otherwise(pl.lit("eval_user"))
        .alias("split")
    )["split"]


def held_out_rows(prompts: pl.DataFrame, config: SplitSettings, exclude_users: pl.Series | None = None) -> pl.DataFrame:
    """Every row of a held-out user, with its `split` (eval_internal / eval_user), from deduped traffic rather
    than the sampled pool: nothing trains on a held-out user, so the pool's thinning only throws away evaluation
    data, and a small slice (a few internal testers) needs every prompt it has. `exclude_users` (user hashes
    some training saw, e.g. the pool's `train` split) are left out whatever the split says, so a user whose
    split differs between the two frames is never on both sides."""
    if prompts.is_empty():
        return prompts.with_columns(pl.lit(None, pl.Utf8).alias("split"))
    split = assign_split(prompts["user_hash"], prompts["source"], config)
    held = prompts.with_columns(split.alias("split")).filter(pl.col("split") != "train")
    if exclude_users is not None and exclude_users.len():
        held = held.filter(~pl.col("user_hash").is_in(exclude_users.drop_nulls().unique().implode()))
    return held


def held_out_prompts(unique: pl.DataFrame, pool: pl.DataFrame, config: SplitSettings) -> pl.DataFrame:
    """The held-out prompts of a window for evaluation: every deduped turn (`unique`) of a held-out user, less
    any user the pool's `train` split holds; the pool's own held-out rows when there are no deduped turns."""
    if unique.is_empty():
        return pool.filter(pl.col("split") != "train") if pool.height else pool
    trained = pool.filter(pl.col("split") == "train")["user_hash"] if pool.height else None
    return held_out_rows(unique, config, exclude_users=trained)
