"""Held-out prompts with engagement labels and the preference pairs made of them, for the reward-eval tests."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from training.rewards.annotation_set import PAIRS


def labelled_prompts(n: int = 80, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cont = bool(i % 2)
        body = "word " * int(rng.integers(3, 30))
        resp = f"Sure, {body.strip()}. What do you think?" if cont else f"Sure, {body.strip()}."
        rows.append(
            {
                "prompt_id": f"p{i}",
                "history": [{"role": "user", "content": f"question {i % 7}"}],
                "served_response": resp,
                "continued": cont,
                "day": dt.date(2024, 1, 1 + (i // 2) % 4),
            }
        )
    return pl.DataFrame(rows)


def prompt_pairs(prompts: pl.DataFrame) -> pl.DataFrame:
    good, bad = prompts.filter(pl.col("continued")), prompts.filter(~pl.col("continued"))
    n = good.height
    return pl.DataFrame(
        {
            "pair_id": [f"x{i}" for i in range(n)],
            "prompt_id": good["prompt_id"],
            "prompt": good["history"],
            "chosen": good["served_response"],
            "rejected": bad["served_response"],
            "source": (["annotation", "engagement"] * n)[:n],
            "margin": [0.0] * n,
            "day": good["day"],
        }
    ).cast(dict(PAIRS))
