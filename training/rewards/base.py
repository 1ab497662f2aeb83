"""What every reward model shares, whatever its backbone: the `RewardModel` protocol, the files it saves,
and how prompts and preference pairs become the message lists it scores.

The backbones (`reward_embedding`, `reward_lm`) and `reward_model.load_reward_model` all build on this
module, which imports none of them, so the reward modules import in one direction only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl

from pipeline.prompts import chat_messages

EmbedFn = Callable[[list[str]], np.ndarray]
Messages = list[dict[str, str]]
METADATA_FILE = "metadata.json"
KINDS = ("pointwise", "pairwise")


@runtime_checkable
class RewardModel(Protocol):
    """What every reward model offers, whatever its backbone."""

    metadata: dict[str, Any]

    def score(self, contexts: list[Messages], responses: list[str]) -> np.ndarray:
        """One float per (context, response): p(continue) for pointwise models, the BT utility for pairwise."""
        ...

    def save(self, directory: str | Path) -> Path:
        """Write the model (weights and `metadata.json`) into `directory`; returns it."""
        ...

    @classmethod
    def load(cls, directory: str | Path, **kwargs: Any) -> RewardModel:
        """Reopen a model written by `save`; scores are identical to the saved model's."""
        ...


def prompt_contexts(prompts: pl.DataFrame) -> list[Messages]:
    """The contexts of `prompts` rows as message lists: `system` (when set) then `history`."""
    systems = prompts["system"].to_list() if "system" in prompts.columns else [None] * prompts.height
    return [chat_messages(system, history) for system, history in zip(systems, prompts["history"].to_list())]


def render_context(messages: Messages, max_messages: int) -> str:
    """The last `max_messages` messages as "role: content" lines: the text an embedder reads."""
    tail = messages[-max_messages:] if max_messages > 0 else messages
    return "\n".join(f"{m['role']}: {m['content']}" for m in tail)


def pairs_to_lists(pairs: pl.DataFrame) -> tuple[list[Messages], list[str], list[str], np.ndarray]:
    """Contexts, chosen, rejected and margins of a `PAIRS` frame, as Python lists and an array."""
    if pairs["prompt"].null_count():
        raise ValueError(
            f"{pairs['prompt'].null_count()} pairs have no prompt messages (only a prompt_id): "
            "fill them with training.rewards.annotations.resolve_prompts first"
        )
    contexts = [[{"role": m["role"], "content": m["content"] or ""} for m in p] for p in pairs["prompt"].to_list()]
    margins = pairs["margin"].fill_null(0.0).to_numpy() if "margin" in pairs.columns else np.zeros(pairs.height)
    return contexts, pairs["chosen"].to_list(), pairs["rejected"].to_list(), margins.astype(np.float32)
