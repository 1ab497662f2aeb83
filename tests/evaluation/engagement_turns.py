"""Simulator turns where a warm, curious reply is continued far more often than a curt one."""

from __future__ import annotations

import numpy as np
import polars as pl

WARM = ["That sounds fun! What did you like most about it?", "Oh nice, tell me more, how did it go?"]
COLD = ["ok.", "no."]


def engagement_turns(n_users: int = 120, seed: int = 0) -> pl.DataFrame:
    """Turns where a warm, curious reply is continued far more often than a curt one."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for k in range(4):
            warm = rng.random() < 0.5
            reply = WARM[k % 2] if warm else COLD[k % 2]
            rows.append(
                {
                    "user_hash": f"user{u}",
                    "conversation_id": f"c{u}",
                    "context": "I went hiking this weekend" if k % 2 else "I just got back from a concert",
                    "reply": reply,
                    "continued": bool(rng.random() < (0.85 if warm else 0.2)),
                }
            )
    return pl.DataFrame(rows)
