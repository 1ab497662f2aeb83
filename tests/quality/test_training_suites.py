"""The training-set suites pass on what the real builders produce and catch each kind of broken row."""

from __future__ import annotations

from dataclasses import fields

import polars as pl
import pytest

from pipeline import schema
from quality import training_tables as tables
from quality.suites import validate_table
from tests.training.tiny_policy import cands, prompts_frame
from training.policy import sft_dataset
from training.policy.preference_dataset import PreferenceBuildConfig, build_preference_dataset
from training.policy.sft_dataset import SFTBuildConfig, build_sft_dataset
from training.policy.steer_data import check_candidates, steer_prompts, with_repairs

pytestmark = pytest.mark.usefixtures("gx_runtime")


def _sft_frame() -> pl.DataFrame:
    """Kept SFT rows from every source, one prompt both sampled and served, a character card's prompt with two
    rule-keeping replies, with their messages."""
    card, lower = "steer:bramble:compost", "steer:nova:bored"
    cards = steer_prompts().filter(pl.col("prompt_id").is_in([card, lower]))
    prompts = pl.concat([prompts_frame(6), cards], how="diagonal_relaxed")
    keeping = [(card, 0, "Turn it weekly. What do you grow?", 0.9), (card, 1, "Keep it damp. Got a bin?", 0.8)]
    c = cands(
        [(f"p{i}", j, f"reply {i} number {j}" + "!" * j, 0.1 * i + 0.3 * j) for i in range(6) for j in range(2)]
        + keeping
        + [(lower, 0, "Have You Tried Stargazing?", 0.5)]  # repaired into lowercase: the `repaired` source
    )
    c, _ = with_repairs(check_candidates(c, prompts), prompts, lambda ctx, texts: [0.6] * len(texts))
    rewrites = pl.DataFrame(
        {
            "prompt_id": ["p0", "elsewhere"],
            "prompt": [None, [{"role": "user", "content": "what is up?"}]],
            "rewrite": ["a careful rewrite", "not much, you?"],
        },
        schema_overrides={"prompt": pl.List(schema.MESSAGE)},
    )
    # equal shares, so that two rule-keeping replies leave room for every other source
    mix = dict.fromkeys(sft_dataset.SFT_SOURCES, 1.0)
    res = build_sft_dataset(prompts, c, SFTBuildConfig(min_score=0.0, mix=mix, length_balance=None), rewrites=rewrites)
    # the same join the sft_dataset asset validates: ids from the frame, texts from the dataset
    return res.frame.with_columns(res.dataset.to_polars().get_column("messages"))


def _pairs() -> pl.DataFrame:
    """Every pair the builder considered (kept and dropped), from candidates and human annotations."""
    prompts = prompts_frame(4)
    c = cands(
        [
            ("p0", 0, "a warm, kind answer", 0.9),
            ("p0", 1, "ok", 0.2),
            ("p1", 0, "x" * 300, 0.9),
            ("p1", 1, "short", 0.1),
            ("p2", 0, "sure thing!", 0.7),
            ("p2", 1, "nope", 0.3),
            ("p3", 0, "same", 0.5),
            ("p3", 1, "same again", 0.5),
        ]
    )
    ann = pl.DataFrame(
        {
            "pair_id": ["h1"],
            "prompt": [[{"role": "user", "content": "hi"}]],
            "chosen": ["hello there!"],
            "rejected": ["go away"],
            "source": ["human"],
            "margin": [None],
        },
        schema_overrides={"margin": pl.Float64, "prompt": pl.List(schema.MESSAGE)},
    )
    # the length filters under test are the per-pair ones, so pairing by length and the balance are off
    cfg = PreferenceBuildConfig(max_length_ratio=1000.0, length_balance=None)
    return build_preference_dataset(prompts, c, cfg, annotation_pairs=ann).frame


def _kept(pairs: pl.DataFrame) -> pl.DataFrame:
    return pairs.filter(pl.col("drop_reason").is_null())


def _set_message(df: pl.DataFrame, column: str, row: int, index: int, **changes) -> pl.DataFrame:
    values = df[column].to_list()
    values[row] = [dict(m) for m in values[row]]
    values[row][index].update(changes)
    return df.with_columns(pl.Series(column, values, dtype=df.schema[column]))


def test_suites_restate_the_builders_defaults():
    assert tables.SFT_SOURCES == sft_dataset.SFT_SOURCES
    defaults = {f.name: f.default for f in fields(PreferenceBuildConfig)}
    assert tables.PAIR_MAX_LENGTH_DELTA == defaults["max_length_delta"]
    assert tables.PAIR_MAX_EMOJI_DELTA == defaults["max_emoji_delta"]


def test_sft_suite_passes_on_a_real_build():
    frame = _sft_frame()
    assert set(frame["source"]) == set(sft_dataset.SFT_SOURCES)
    # a prompt may legitimately be kept both as a sampled and a served example
    assert frame["prompt_id"].n_unique() < frame.height
    result = validate_table("sft_examples", frame)
    assert result.all_passed, result.to_markdown()


SFT_FAULTS = {
    "ends_with_user": (
        lambda df, m: _set_message(df, "messages", 0, -1, role="user"),
        ("expect_column_values_to_be_in_set", "_msg_last_role"),
    ),
    "blank_reply": (
        lambda df, m: _set_message(df, "messages", 1, -1, content="   "),
        ("expect_column_values_to_be_between", "_reply_chars"),
    ),
    "unknown_role": (
        lambda df, m: _set_message(df, "messages", 2, 0, role="bot"),
        ("expect_column_values_to_be_null", "_msg_unknown_role"),
    ),
    "reply_without_question": (
        lambda df, m: _set_message(df, "messages", 2, -2, role="assistant"),
        ("expect_column_values_to_be_in_set", "_msg_prev_role"),
    ),
    "empty_messages": (
        lambda df, m: m.set(df, "messages", 0, []),
        ("expect_column_values_to_be_between", "_msg_turns"),
    ),
    "unknown_source": (
        lambda df, m: m.set(df, "source", 0, "scraped"),
        ("expect_column_values_to_be_in_set", "source"),
    ),
    "null_prompt_id": (
        lambda df, m: m.set(df, "prompt_id", 0, None),
        ("expect_column_values_to_not_be_null", "prompt_id"),
    ),
    "duplicate_row_id": (
        lambda df, m: m.set(df, "row_id", 1, df["row_id"][0]),
        ("expect_column_values_to_be_unique", "row_id"),
    ),
    "no_rows": (lambda df, m: df.head(0), ("expect_table_row_count_to_be_between", None)),
    "no_messages_column": (lambda df, m: df.drop("messages"), ("expect_table_columns_to_match_set", None)),
}


@pytest.mark.parametrize("fault", sorted(SFT_FAULTS))
def test_sft_suite_catches(fault, make):
    breaker, expected = SFT_FAULTS[fault]
    result = validate_table("sft_examples", breaker(_sft_frame(), make))
    assert expected in make.failed(result), result.to_markdown()
    assert not result.success


def test_sft_suite_names_the_offending_row(make):
    result = validate_table("sft_examples", _set_message(_sft_frame(), "messages", 0, 0, role="bot"))
    (outcome,) = [o for o in result.failed if o.column == "_msg_unknown_role"]
    assert outcome.examples == [{"id": _sft_frame()["row_id"][0], "value": "bot"}]


def test_preference_suite_passes_on_kept_pairs_only(make):
    pairs = _pairs()
    kept = _kept(pairs)
    assert set(kept["source"]) == {"candidates", "human"} and kept["margin"].null_count() == 1
    result = validate_table("preference_pairs", kept)
    assert result.all_passed, result.to_markdown()
    # the builder's frame keeps dropped pairs for the record; they must not reach training
    with_dropped = validate_table("preference_pairs", pairs)
    assert ("expect_column_values_to_be_null", "drop_reason") in make.failed(with_dropped)
    assert not with_dropped.success


PAIR_FAULTS = {
    "identical": (
        lambda df, m: m.set(df, "rejected", 0, df["chosen"][0]),
        ("expect_column_values_to_be_in_set", "_same_reply"),
    ),
    "blank_chosen": (
        lambda df, m: m.set(df, "chosen", 0, " "),
        ("expect_column_values_to_be_between", "_chosen_chars"),
    ),
    "null_rejected": (
        lambda df, m: m.set(df, "rejected", 0, None),
        ("expect_column_values_to_not_be_null", "rejected"),
    ),
    "prompt_ends_with_assistant": (
        lambda df, m: _set_message(df, "prompt", 0, -1, role="assistant"),
        ("expect_column_values_to_be_in_set", "_prompt_last_role"),
    ),
    "empty_prompt": (
        lambda df, m: m.set(df, "prompt", 0, []),
        ("expect_column_values_to_be_between", "_prompt_turns"),
    ),
    "length_delta": (
        lambda df, m: m.set(df, "chosen", 0, "y" * 400),
        ("expect_column_values_to_be_between", "_abs_delta_len"),
    ),
    "emoji_delta": (
        lambda df, m: m.set(df, "delta_emoji", 0, -3),
        ("expect_column_values_to_be_between", "_abs_delta_emoji"),
    ),
    "zero_margin": (
        lambda df, m: m.set(df, "margin", 0, 0.0),
        ("expect_column_values_to_be_between", "margin"),
    ),
    "duplicate_pair_id": (
        lambda df, m: m.set(df, "pair_id", 1, df["pair_id"][0]),
        ("expect_column_values_to_be_unique", "pair_id"),
    ),
    "no_rows": (lambda df, m: df.head(0), ("expect_table_row_count_to_be_between", None)),
}


@pytest.mark.parametrize("fault", sorted(PAIR_FAULTS))
def test_preference_suite_catches(fault, make):
    breaker, expected = PAIR_FAULTS[fault]
    result = validate_table("preference_pairs", breaker(_kept(_pairs()), make))
    assert expected in make.failed(result), result.to_markdown()
    assert not result.success
