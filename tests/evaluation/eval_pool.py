"""A tiny held-out pool and reward models on a hashing embedder, for offline-evaluation tests."""

import zlib
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import schema
from tests.training.tiny_policy import TOPICS
from training.rewards.annotation_set import PAIRS
from training.rewards.reward_embedding import EmbeddingHeadConfig, EmbeddingRewardModel

SPLITS = ("train", "eval_internal", "eval_user")


def hashing_embed(texts: list[str]) -> np.ndarray:
    """Character trigrams hashed into 32 buckets: a deterministic stand-in for the sentence embedder."""
    out = np.full((len(texts), 32), 1e-3, dtype=np.float32)
    for i, t in enumerate(texts):
        for j in range(max(len(t) - 2, 0)):
            out[i, zlib.crc32(t[j : j + 3].encode()) % 32] += 1.0
    return out


def eval_pool(day: str) -> pl.DataFrame:
    rows = []
    for i in range(12):
        topic = TOPICS[i % len(TOPICS)]
        question = f"do you like {topic}? asking on {day}, number {i}"
        history = [{"role": "user", "content": question}]
        rows.append(
            {
                "prompt_id": f"{day}-p{i}",
                "conversation_id": f"{day}-c{i}",
                "cut_turn": 0,
                "history": history,
                "system": None,
                "character_id": "robin",
                "user_hash": f"u{i}",
                "source": "internal" if i % 3 == 1 else "external",
                "text": f"user: {question}",
                "last_user": question,
                "served_response": f"I like {topic}!" if i % 2 else "ok.",
                "served_by": "gen-0",
                "continued": bool(i % 2),
                "reply_len": 20 * (i % 2),
                "depth_after": 3 * (i % 2),
                "thumbs": None,
                "day": date.fromisoformat(day),
            }
        )
    frame = pl.DataFrame(rows, schema=schema.PROMPTS)
    return frame.with_columns(pl.Series("split", [SPLITS[i % 3] for i in range(12)]), pl.lit(0).alias("cluster_id"))


def fit_reward_models(pool: pl.DataFrame, pointwise_dir: Path, pairwise_dir: Path) -> None:
    cfg = dict(epochs=5, hidden=8, device="cpu", batch_size=16)
    point = EmbeddingRewardModel.fit_pointwise(pool, EmbeddingHeadConfig(kind="pointwise", **cfg), hashing_embed)
    point.save(pointwise_dir)
    good, bad = pool.filter(pl.col("continued")), pool.filter(~pl.col("continued"))
    pairs = pl.DataFrame(
        {
            "pair_id": [f"x{i}" for i in range(good.height)],
            "prompt_id": good["prompt_id"],
            "prompt": good["history"],
            "chosen": good["served_response"],
            "rejected": bad["served_response"],
            "source": ["engagement"] * good.height,
            "margin": [0.5] * good.height,
            "day": good["day"],
        }
    ).cast(dict(PAIRS))
    pair = EmbeddingRewardModel.fit_pairwise(pairs, EmbeddingHeadConfig(kind="pairwise", **cfg), hashing_embed)
    pair.save(pairwise_dir)
