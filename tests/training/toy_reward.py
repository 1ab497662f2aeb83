"""A reward-model loader for the GRPO tests, reached by dotted path like a real one ("toy_reward:load_scorer")."""

from __future__ import annotations

import numpy as np

CALLS: list[str | None] = []


class ToyRewardModel:
    """Has a `.score` method like training.rewards.reward_model's RewardModel: rewards replies mentioning 'love'."""

    def score(self, contexts: list[list[dict]], responses: list[str]) -> np.ndarray:
        return np.array([1.0 if "love" in r else 0.0 for r in responses]) + np.array([len(r) for r in responses]) / 1e3


def load_scorer(path: str | None) -> ToyRewardModel:
    CALLS.append(path)
    return ToyRewardModel()
