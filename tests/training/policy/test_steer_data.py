"""Steerability training data: only the training cards, only replies that keep every rule."""

import json

import polars as pl
import pytest

from engine import cards
from tests.training.tiny_policy import cands, drop_reasons, prompts_frame
from training.policy.grpo import GRPORunConfig, RuleChecks, reward_functions
from training.policy.preference_dataset import PreferenceBuildConfig, build_preference_dataset
from training.policy.rl_pool import select_rl_prompts
from training.policy.sft_dataset import SFTBuildConfig, build_sft_dataset
from training.policy.steer_data import (
    PREFIX,
    REPAIRED,
    SteerDataConfig,
    check_candidates,
    steer_prompts,
    violations,
    with_repairs,
)

# bramble: at most 50 words, ends with a question, no emoji
BRAMBLE = f"{PREFIX}bramble:compost"
KEEPS = "Start with leaves and kitchen scraps, turn it weekly. What do you grow?"
KEEPS_TOO = "Mix greens and browns, keep it damp. Do you have space for a bin?"
NO_QUESTION = "Start with leaves and kitchen scraps, and turn the heap every week."
EMOJI = "Start with leaves and kitchen scraps 🌱, turn it weekly. What do you grow?"


def _prompts() -> pl.DataFrame:
    steer = steer_prompts()
    return pl.concat([prompts_frame(2), steer], how="diagonal_relaxed")


def test_steer_prompts_come_from_training_cards_only():
    steer = steer_prompts()
    suite = cards.load_suite()
    train_ids = {c["character_id"] for c in cards.suite_cards(suite, cards.TRAIN)}
    assert set(steer["character_id"]) == train_ids
    assert steer["prompt_id"].str.starts_with(PREFIX).all() and (steer["split"] == "train").all()
    assert steer.height == cards.build_prompts(suite, split=cards.TRAIN).height
    assert steer.row(0, named=True)["history"][-1]["role"] == "user"


def test_rule_checks_use_the_evaluation_checkers():
    spec = steer_prompts().filter(pl.col("prompt_id") == BRAMBLE)["instructions"][0]
    assert violations(spec, KEEPS) == []
    assert violations(spec, NO_QUESTION) == ["end_with_question"]
    assert sorted(violations(spec, EMOJI)) == ["no_emoji"]
    assert set(violations(spec, None)) == {s["type"] for s in json.loads(spec)}


def test_rejection_sampling_keeps_only_replies_that_keep_every_rule():
    prompts = _prompts()
    frame = cands(
        [
            (BRAMBLE, 0, NO_QUESTION, 0.99),  # the reward model's favourite, but it breaks a rule
            (BRAMBLE, 1, EMOJI, 0.95),
            (BRAMBLE, 2, KEEPS, 0.60),
            (BRAMBLE, 3, KEEPS_TOO, 0.55),
            (BRAMBLE, 4, KEEPS, 0.50),  # same text as a kept one
            ("p0", 0, "I love that, tell me more!", 0.9),
            ("p1", 0, "sure thing", 0.8),
        ]
    )
    res = build_sft_dataset(
        prompts, frame, SFTBuildConfig(min_score=0.1, mix={"rejection_sampled": 1, "steerability": 1})
    )
    kept = res.dataset.to_polars()
    steer_rows = kept.filter(pl.col("source") == "steerability")
    replies = [m[-1]["content"] for m in steer_rows["messages"].to_list()]
    assert sorted(replies) == sorted([KEEPS, KEEPS_TOO])
    for text in replies:  # every kept steerability reply passes every rule of its card
        assert violations(steer_prompts().filter(pl.col("prompt_id") == BRAMBLE)["instructions"][0], text) == []
    reasons = drop_reasons(res)
    assert reasons[f"{BRAMBLE}/gen1/0"] == reasons[f"{BRAMBLE}/gen1/1"] == "breaks_instructions"
    assert reasons[f"{BRAMBLE}/gen1/4"] == "not_best"
    assert steer_rows["messages"][0][0]["role"] == "system"  # the card's rules are in the prompt
    assert res.manifest["rows_by_source"]["steerability"] == 2
    # a rule-keeping reply under the reward-model floor is not a target either
    low = build_sft_dataset(prompts, frame, SFTBuildConfig(min_score=0.7, mix={"steerability": 1}))
    assert len(low.dataset) == 0 and drop_reasons(low)[f"{BRAMBLE}/gen1/2"] == "below_score_floor"


def test_steer_pairs_put_a_rule_keeper_against_a_similar_length_breaker():
    prompts = _prompts()
    long_breaker = "Start with leaves. " * 12
    frame = cands(
        [
            (BRAMBLE, 0, KEEPS, 0.2),
            (BRAMBLE, 1, long_breaker, 0.9),
            (BRAMBLE, 2, NO_QUESTION, 0.8),
            (f"{PREFIX}bramble:winter", 0, KEEPS, 0.5),  # nothing breaks a rule here: no pair
        ]
    )
    res = build_preference_dataset(prompts, frame, PreferenceBuildConfig())
    pairs = res.frame.filter(pl.col("source") == "steerability")
    assert pairs.height == 1
    pair = pairs.row(0, named=True)
    assert (pair["chosen"], pair["rejected"]) == (KEEPS, NO_QUESTION) and pair["drop_reason"] is None
    assert abs(pair["delta_len"]) <= PreferenceBuildConfig().steer_max_length_delta
    assert drop_reasons(res)[f"{PREFIX}bramble:winter/steer_pair"] == "no_rule_breaking_reply"
    far = build_preference_dataset(
        prompts, frame.filter(pl.col("sample_idx") != 2), PreferenceBuildConfig(steer_max_length_delta=20)
    )
    assert drop_reasons(far)[f"{BRAMBLE}/steer_pair"] == "steer_length_delta"


def test_rl_pool_carries_the_card_rules_and_grpo_rewards_them():
    prompts = _prompts()
    frame = check_candidates(cands([(BRAMBLE, 0, KEEPS, 0.5), ("p0", 0, "ok", 0.1), ("p0", 1, "okay", 0.3)]), prompts)
    assert frame.filter(pl.col("prompt_id") == "p0")["rules_kept"].is_null().all()
    pool = select_rl_prompts(prompts, frame).dataset.to_polars()
    steer = pool.filter(pl.col("prompt_id").str.starts_with(PREFIX))
    assert steer.height == steer_prompts().height and steer["instructions"].is_not_null().all()
    spec = steer.filter(pl.col("prompt_id") == BRAMBLE)["instructions"][0]
    reward = RuleChecks()
    got = reward(
        [[]] * 4,
        [KEEPS, NO_QUESTION, [{"role": "assistant", "content": EMOJI + " 🌱 " + NO_QUESTION}], "ok"],
        instructions=[spec, spec, spec, None],
    )
    assert got == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    funcs, weights = reward_functions(GRPORunConfig(), lambda c, r: [0.0] * len(r), with_rules=True)
    assert [type(f).__name__ for f in funcs] == ["RewardModelScore", "RuleChecks"] and weights == [1.0, 1.0]


# nova: lowercase, at most 180 characters, ends with a question
NOVA = f"{PREFIX}nova:bored"
CAPITALS = "Have You Seen The Launch?"
NO_QUESTION_CAPS = "The Launch Was Great."


def test_a_reply_that_breaks_only_rules_of_form_is_repaired_into_a_scored_candidate_of_its_own():
    prompts = _prompts()
    frame = check_candidates(
        cands([(NOVA, 0, CAPITALS, 0.7), (NOVA, 1, NO_QUESTION_CAPS, 0.9), ("p0", 0, "Hi There?", 0.5)]), prompts
    )
    scored = []

    def score(contexts, texts):
        scored.extend(texts)
        assert all(c[0]["role"] == "system" for c in contexts)  # scored in the card's context
        return [0.4] * len(texts)

    out, counts = with_repairs(frame, prompts, score)
    assert counts == {"repaired": 1, "not_repairable": 1, "still_broken": 0}
    repaired = out.filter(pl.col("generator").str.ends_with(REPAIRED)).row(0, named=True)
    assert repaired["text"] == "have you seen the launch?" and scored == [repaired["text"]]
    assert (repaired["prompt_id"], repaired["sample_idx"], repaired["generator"]) == (NOVA, 0, f"gen1{REPAIRED}")
    assert repaired["rules_kept"] and repaired["rm_pointwise"] == 0.4 and repaired["n_tokens"] is None
    assert out.height == frame.height + 1 and out.schema == frame.schema
    # the sampled originals are kept as they are: the repaired reply and its original make a preference pair
    pairs = build_preference_dataset(prompts, out, PreferenceBuildConfig()).frame
    pair = pairs.filter(pl.col("prompt_id") == NOVA).row(0, named=True)
    assert (pair["chosen"], pair["rejected"]) == ("have you seen the launch?", CAPITALS)
    # a source of its own in the SFT mixture, so it never displaces the sampled rule-keepers
    sft = build_sft_dataset(prompts, out, SFTBuildConfig(min_score=0.1, mix={"steerability": 1, "repaired": 1}))
    rows = sft.dataset.to_polars()
    assert rows["source"].to_list() == ["repaired"]
    assert [m[-1]["content"] for m in rows["messages"]] == ["have you seen the launch?"]
    assert sft.manifest["available_by_source"]["steerability"] == 0


def test_a_sampled_rule_keeper_is_chosen_before_a_repaired_one():
    prompts = _prompts()
    sampled = "did you watch it go up?"
    frame = check_candidates(cands([(NOVA, 0, CAPITALS, 0.9), (NOVA, 1, sampled, 0.2)]), prompts)
    out, _ = with_repairs(frame, prompts, lambda c, t: [0.95] * len(t))
    pair = build_preference_dataset(prompts, out, PreferenceBuildConfig()).frame.row(0, named=True)
    assert pair["chosen"] == sampled  # though the repaired reply scores higher
    sft = build_sft_dataset(prompts, out, SFTBuildConfig(min_score=0.1, mix={"steerability": 1, "repaired": 1}))
    assert sft.manifest["available_by_source"]["steerability"] == 1


def test_repairs_can_be_turned_off_and_an_unknown_rule_fails_fast():
    prompts = _prompts()
    frame = check_candidates(cands([(NOVA, 0, CAPITALS, 0.7)]), prompts)
    out, counts = with_repairs(frame, prompts, None, SteerDataConfig(repair_rules=()))
    assert out.equals(frame) and counts["repaired"] == 0
    # only the case rule: a lowercase reply that also lacks its signature stays broken
    marisol = f"{PREFIX}marisol:unsigned"
    frame = check_candidates(cands([(marisol, 0, "Waves are big today", 0.7)]), prompts)
    out, counts = with_repairs(frame, prompts, None, SteerDataConfig(repair_rules=("case",)))
    assert counts["not_repairable"] == 1 and out.height == 1
    out, _ = with_repairs(frame, prompts, None)
    assert out.filter(pl.col("generator").str.ends_with(REPAIRED))["text"].to_list() == [
        "Waves are big today\n— Marisol"
    ]
    with pytest.raises(ValueError, match="repair_rules.*end_with_question"):
        SteerDataConfig(repair_rules=("case", "end_with_question"))
