"""Reward models: one interface over a pointwise engagement model and a pairwise preference model.

The paper's reward models estimate the engagement landscape so that the policy can climb it:

- the *pointwise* model predicts p(continue), the chance that the user answers a response, for a
  (context, response) pair (and, with the embedding backbone, the expected reply length);
- the *pairwise* model is a Bradley-Terry model: a utility u(context, response) such that
  P(a preferred to b) = sigmoid(u(a) - u(b)), trained on annotated pairs and on pairs derived from
  engagement (`engagement_pairs`).

Two backbones implement both: `training.rewards.reward_embedding.EmbeddingRewardModel`, a small head on
frozen sentence embeddings (the CPU default), and `training.rewards.reward_lm.LMRewardModel`, a
sequence-classification language model trained with TRL's `RewardTrainer` (for GPU runs).
Every model follows the `RewardModel` protocol; `load_reward_model` reopens any saved one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipeline import schema
from pipeline.digest import digest
from pipeline.prompts import chat_messages
from training.rewards.annotation_set import PAIRS
from training.rewards.base import METADATA_FILE, RewardModel


def load_reward_model(directory: str | Path, **kwargs: Any) -> RewardModel:
    """Reopen any saved reward model, picking the backbone from its `metadata.json`.

    Keyword arguments go to the backbone's `load` (e.g. `embed_fn` for the embedding backbone).
    """
    meta = json.loads((Path(directory) / METADATA_FILE).read_text())
    backbone = meta.get("backbone")
    if backbone == "embedding":
        from training.rewards.reward_embedding import EmbeddingRewardModel

        return EmbeddingRewardModel.load(directory, **kwargs)
    if backbone == "lm":
        from training.rewards.reward_lm import LMRewardModel

        return LMRewardModel.load(directory, **kwargs)
    raise ValueError(f"{directory} holds a reward model of unknown backbone {backbone!r}")


@dataclass
class EngagementPairsConfig:
    min_similarity: float = field(
        default=0.8,
        metadata={
            "help": "Least cosine similarity (TF-IDF of character 3-5-grams, lowercased, punctuation "
            "removed) of two prompts' last user messages for them to count as near-identical."
        },
    )
    compare_messages: int = field(
        default=2,
        metadata={
            "help": "Trailing history messages compared: 1 compares the last user message only; 2 adds the "
            "assistant turn before it, so a generic 'yeah' after different questions is not a match."
        },
    )
    neighbors: int = field(default=10, metadata={"help": "Nearest prompts examined per prompt inside its cluster."})
    depth_margin: int = field(
        default=3,
        metadata={
            "help": "Least difference in `depth_after` (user turns after the response) that makes one of "
            "two continued responses clearly better."
        },
    )
    use_thumbs: bool = field(
        default=True, metadata={"help": "Let opposite explicit thumbs decide a pair before implicit signals."}
    )
    max_history_gap: int = field(
        default=2,
        metadata={
            "help": "Most difference in history length (messages) between paired prompts: depth depends "
            "on where in a conversation a prompt sits, so distant positions are not comparable."
        },
    )
    max_pairs_per_prompt: int = field(
        default=3, metadata={"help": "Most pairs one prompt may take part in, so no prompt dominates."}
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity={self.min_similarity} must be in (0, 1]; 0.8 is a good start")
        for name in ("compare_messages", "neighbors", "depth_margin", "max_pairs_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.max_history_gap < 0:
            raise ValueError(f"max_history_gap={self.max_history_gap} must be >= 0")


ENGAGEMENT_PAIR_EXTRA = {
    "chosen_prompt_id": pl.Utf8,
    "rejected_prompt_id": pl.Utf8,
    "signal": pl.Utf8,
    "similarity": pl.Float64,
}
SIGNAL_MARGIN = {"thumbs": 1.0, "continued": 0.5, "depth": 0.25}


def _preference(a: dict, b: dict, config: EngagementPairsConfig) -> tuple[int, str] | None:
    """+1 if a is clearly more engaging than b, -1 if b is, with the signal that decided; None if neither."""
    ta, tb = a.get("thumbs"), b.get("thumbs")
    if config.use_thumbs and ta is not None and tb is not None and ta * tb < 0:
        return (1 if ta > 0 else -1), "thumbs"
    if a["continued"] != b["continued"]:
        return (1 if a["continued"] else -1), "continued"
    if a["continued"] and abs(a["depth_after"] - b["depth_after"]) >= config.depth_margin:
        return (1 if a["depth_after"] > b["depth_after"] else -1), "depth"
    return None


def engagement_pairs(prompts: pl.DataFrame, config: EngagementPairsConfig | None = None) -> pl.DataFrame:
    """Preference pairs from the served responses of near-identical prompts with clearly different engagement.

    Two prompts are near-identical when they share `split` and `cluster_id` (each when present), come
    from different conversations, have histories of similar length and their last
    `compare_messages` messages (the last user message, and the assistant turn it answers) are at
    least `min_similarity` alike. Their served responses make a pair when one is clearly more engaging:
    opposite thumbs, else continued vs not, else a `depth_after` difference of at least
    `depth_margin`. The pair's prompt is the history of the member with the smaller `prompt_id`
    (a choice independent of the label). Returns a `PAIRS` frame plus `chosen_prompt_id`,
    `rejected_prompt_id`, `signal` and `similarity`; margins follow `SIGNAL_MARGIN`.

    The neighbour search is exact within a group, so its cost grows with the square of the largest
    group: cluster prompts first (one group of 20,000 prompts takes about a minute on two cores).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import NearestNeighbors

    config = config or EngagementPairsConfig()
    out_schema = pl.Schema({**PAIRS, **ENGAGEMENT_PAIR_EXTRA})
    needed = ["prompt_id", "conversation_id", "history", "served_response", "continued", "depth_after"]
    missing = [c for c in needed if c not in prompts.columns]
    if missing:
        raise ValueError(f"engagement_pairs needs the prompts columns {missing}")
    df = prompts.filter(
        pl.col("continued").is_not_null()
        & pl.col("depth_after").is_not_null()
        & pl.col("history").is_not_null()
        & pl.col("served_response").is_not_null()
    ).with_row_index("_row")
    if df.height < 2:
        return schema.empty(out_schema)
    group_cols = [c for c in ("split", "cluster_id") if c in df.columns]
    tail = df.select(
        pl.col("history")
        .list.tail(config.compare_messages)
        .list.eval(pl.element().struct.field("content"))
        .list.join("\n")
    ).to_series()
    # punctuation weighs heavily in the char n-grams of short messages; "hi!" and "hi" are the same ask
    texts = (
        tail.fill_null("")
        .str.to_lowercase()
        .str.replace_all(r"[^\w\s]", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
        .to_list()
    )
    if not any(texts):
        return schema.empty(out_schema)
    vectors = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=1).fit_transform(texts)
    rows = df.with_columns(pl.col("history").list.len().alias("_hlen")).to_dicts()

    candidates: list[tuple[float, int, int]] = []
    groups = df.group_by(group_cols, maintain_order=True).agg("_row")["_row"] if group_cols else [df["_row"]]
    for members in groups:
        idx = np.asarray(members.to_list(), dtype=np.int64)
        if idx.size < 2:
            continue
        k = min(config.neighbors + 1, idx.size)
        nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(vectors[idx])
        dist, nbr = nn.kneighbors(vectors[idx])
        for a_pos in range(idx.size):
            for d, b_pos in zip(dist[a_pos], nbr[a_pos]):
                a, b = int(idx[a_pos]), int(idx[b_pos])
                sim = 1.0 - float(d)
                if a < b and sim >= config.min_similarity - 1e-9:
                    candidates.append((sim, a, b))
                elif b < a and sim >= config.min_similarity - 1e-9:
                    candidates.append((sim, b, a))
    candidates = sorted(set(candidates), key=lambda t: (-t[0], t[1], t[2]))

    used = np.zeros(df.height, dtype=np.int64)
    out = []
    for sim, a, b in candidates:
        ra, rb = rows[a], rows[b]
        if used[a] >= config.max_pairs_per_prompt or used[b] >= config.max_pairs_per_prompt:
            continue
        if ra["conversation_id"] == rb["conversation_id"] or abs(ra["_hlen"] - rb["_hlen"]) > config.max_history_gap:
            continue
        if ra["served_response"].strip().lower() == rb["served_response"].strip().lower():
            continue
        pref = _preference(ra, rb, config)
        if pref is None:
            continue
        sign, signal = pref
        chosen, rejected = (ra, rb) if sign > 0 else (rb, ra)
        anchor = min(ra, rb, key=lambda r: r["prompt_id"])
        used[a] += 1
        used[b] += 1
        days = [d for d in (ra.get("day"), rb.get("day")) if d is not None]
        out.append(
            {
                "pair_id": "engagement:" + digest(chosen["prompt_id"], rejected["prompt_id"])[:16],
                "prompt_id": anchor["prompt_id"],
                "prompt": chat_messages(anchor.get("system"), anchor["history"]),
                "chosen": chosen["served_response"],
                "rejected": rejected["served_response"],
                "source": "engagement",
                "margin": SIGNAL_MARGIN[signal],
                "day": max(days) if days else None,
                "chosen_prompt_id": chosen["prompt_id"],
                "rejected_prompt_id": rejected["prompt_id"],
                "signal": signal,
                "similarity": round(sim, 6),
            }
        )
    return pl.DataFrame(out, schema=out_schema)
