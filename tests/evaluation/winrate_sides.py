"""Replies of two generations on the same prompts, and a judge that prefers longer replies."""

from __future__ import annotations

import polars as pl


def side(ids, slices, responses, contexts=None):
    return pl.DataFrame(
        {
            "prompt_id": ids,
            "slice": slices,
            "context": contexts or [f"context of {i}" for i in ids],
            "response": responses,
        }
    )


def length_judge(contexts, responses):
    return [float(len(r)) for r in responses]
