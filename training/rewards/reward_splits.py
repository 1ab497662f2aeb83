"""Held-out splits for validating a reward model: prompts by day (the latest days are held out) and preference
pairs by a hash of their prompt, so pairs sharing a prompt stay on one side of a split and in one fold."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.seeded_uniform import seeded_uniforms


def split_by_day(frame: pl.DataFrame, eval_days: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, eval): the `eval_days` latest distinct days are held out, everything before trains."""
    if eval_days < 1:
        raise ValueError(f"eval_days={eval_days} must be at least 1")
    days = frame["day"].drop_nulls().unique().sort()
    if days.len() <= eval_days:
        raise ValueError(f"{days.len()} distinct days cannot hold out {eval_days}: lower eval_days")
    cut = days[-eval_days]
    return frame.filter(pl.col("day") < cut), frame.filter(pl.col("day") >= cut)


def _prompt_keys(pairs: pl.DataFrame) -> np.ndarray:
    """A number in [0, 1) per pair from a hash of its prompt: pairs sharing a prompt get the same one."""
    return seeded_uniforms([repr([(m["role"], m["content"]) for m in p]) for p in pairs["prompt"].to_list()])


def split_pairs(pairs: pl.DataFrame, eval_fraction: float = 0.2) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, eval) pairs, split by a hash of the prompt so pairs sharing a prompt stay together."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must be in (0, 1)")
    held = pl.Series(_prompt_keys(pairs) < eval_fraction)
    return pairs.filter(~held), pairs.filter(held)


def pair_folds(pairs: pl.DataFrame, folds: int) -> np.ndarray:
    """The fold (0 .. folds-1) of each pair, by the same prompt hash as `split_pairs`."""
    return np.minimum((_prompt_keys(pairs) * folds).astype(np.int64), folds - 1)
