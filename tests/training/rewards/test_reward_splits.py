from __future__ import annotations

from tests.training.rewards.reward_eval_frames import labelled_prompts, prompt_pairs
from training.rewards.reward_splits import split_pairs


def test_split_pairs_keeps_a_prompt_on_one_side():
    pairs = prompt_pairs(labelled_prompts(200))
    train, held = split_pairs(pairs, eval_fraction=0.3)
    assert train.height + held.height == pairs.height and held.height > 0 and train.height > 0
    key = lambda df: {str(p.to_list()) for p in df["prompt"]}  # noqa: E731
    assert not key(train) & key(held)
    assert split_pairs(pairs, eval_fraction=0.3)[1]["pair_id"].to_list() == held["pair_id"].to_list()
