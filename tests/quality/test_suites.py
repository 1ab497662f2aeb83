from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime

import polars as pl
import pytest

from pipeline import schema
from quality.outcomes import CRITICAL, WARNING
from quality.row_counts import row_count_band
from quality.suites import SuiteConfig, validate_table

pytestmark = pytest.mark.usefixtures("gx_runtime")


@pytest.mark.parametrize("table", ["conversations", "quarantine", "prompts", "clusters"])
def test_good_frames_pass(table, make):
    df = getattr(make, table)()
    result = validate_table(table, df, row_history=[df.height])
    assert result.success and result.all_passed, result.to_markdown()
    assert result.statistics["rows"] == df.height
    assert result.statistics["evaluated_expectations"] >= 5
    assert result.severity is None


CONVERSATION_FAULTS = {
    "wrong_role": (lambda df, s: s(df, "role", 3, "bot"), ("expect_column_values_to_be_in_set", "role")),
    "bad_source": (lambda df, s: s(df, "source", 0, "partner"), ("expect_column_values_to_be_in_set", "source")),
    "null_text": (lambda df, s: s(df, "text", 5, None), ("expect_column_values_to_not_be_null", "text")),
    "empty_text": (lambda df, s: s(df, "text", 5, ""), ("expect_column_value_lengths_to_be_between", "text")),
    "too_long_text": (
        lambda df, s: s(df, "text", 7, "x" * 20_001),
        ("expect_column_value_lengths_to_be_between", "text"),
    ),
    "duplicate_message_id": (
        lambda df, s: s(df, "message_id", 1, df["message_id"][0]),
        ("expect_compound_columns_to_be_unique", "conversation_id,message_id"),
    ),
    "raw_user_id": (
        lambda df, s: s(df, "user_hash", 2, "alice@example.com"),
        ("expect_column_values_to_match_regex", "user_hash"),
    ),
    "negative_turn": (lambda df, s: s(df, "turn_index", 0, -1), ("expect_column_values_to_be_between", "turn_index")),
    "unknown_feedback": (lambda df, s: s(df, "feedback", 0, "meh"), ("expect_column_values_to_be_in_set", "feedback")),
    "two_days": (
        lambda df, s: s(df, "day", 0, df["day"][0].replace(day=2)),
        ("expect_column_unique_value_count_to_be_between", "day"),
    ),
    "wrong_dtype": (
        lambda df, s: df.with_columns(pl.col("turn_index").cast(pl.Int64)),
        ("expect_exact_contract_dtypes", None),
    ),
    "missing_column": (lambda df, s: df.drop("source"), ("expect_table_columns_to_match_set", None)),
}


@pytest.mark.parametrize("fault", sorted(CONVERSATION_FAULTS))
def test_conversations_suite_catches(fault, make):
    breaker, expected = CONVERSATION_FAULTS[fault]
    result = validate_table("conversations", breaker(make.conversations(), make.set))
    assert not result.success, f"{fault} went through"
    assert expected in make.failed(result), result.to_markdown()
    assert result.severity == CRITICAL
    assert result.as_check()["severity"] == "ERROR"


def test_failure_metadata_has_examples_with_row_ids(make):
    df = make.set(make.conversations(), "role", 3, "bot")
    result = validate_table("conversations", df)
    md = result.to_metadata()
    json.dumps(md)  # everything an orchestrator stores must be JSON
    [role] = [f for f in md["failed_expectations"] if f["column"] == "role"]
    assert role["unexpected_count"] == 1
    assert role["examples"] == [{"id": df["message_id"][3], "value": "bot"}]
    assert "role" in md["summary_md"] and md["failed_critical"] == 1


def test_long_examples_are_cut_once(make):
    df = make.set(make.conversations(), "text", 7, "y" * 30_000)
    result = validate_table("conversations", df)
    [length] = [o for o in result.failed if o.name == "expect_column_value_lengths_to_be_between"]
    value = length.examples[0]["value"]
    assert value.endswith("(30000 chars)") and len(value) < 200


def test_row_count_jump_is_a_warning_that_does_not_block(make):
    df = make.conversations()
    history = [df.height // 6] * 4  # today holds six times the usual count
    result = validate_table("conversations", df, row_history=history)
    assert result.success and not result.all_passed
    [jump] = result.failed
    assert jump.name == "expect_table_row_count_to_be_between" and jump.severity == WARNING
    low, high = row_count_band(history)
    assert jump.params == {"min_value": low, "max_value": high} and jump.observed == df.height
    assert result.as_check() | {"metadata": None} == {
        "passed": False,
        "severity": "WARN",
        "description": result.detail,
        "metadata": None,
    }
    # a drop is caught too, and severity is configurable
    strict = validate_table(
        "conversations", df, row_history=[df.height * 6] * 4, config=SuiteConfig(row_count_severity=CRITICAL)
    )
    assert not strict.success


def test_length_band_warns(make):
    df = make.conversations().with_columns(text=pl.lit("z" * 5_000))
    result = validate_table("conversations", df)
    assert result.success
    assert ("expect_column_quantile_values_to_be_between", "_text_chars") in make.failed(result)


def test_empty_quarantine_passes_but_empty_conversations_fail(make):
    assert validate_table("quarantine", schema.empty(schema.QUARANTINE)).success
    empty = validate_table("conversations", schema.empty(schema.CONVERSATIONS))
    assert ("expect_table_row_count_to_be_between", None) in make.failed(empty) and not empty.success


def test_unknown_table():
    with pytest.raises(ValueError, match="known tables"):
        validate_table("nope", pl.DataFrame())


def test_real_chitchat_messages_pass(shared_data):
    """Real human chat, cast to the conversations contract, passes the suite as is."""
    with gzip.open(shared_data / "chitchat_dataset.json.gz", "rt", encoding="utf-8") as f:
        data = json.load(f)
    rows = []
    for conv_id, conv in list(data.items())[:150]:
        speakers: dict[str, int] = {}
        i = 0
        for turn in conv["messages"]:
            for msg in turn:
                who = speakers.setdefault(msg["sender"], len(speakers))
                rows.append(
                    {
                        "message_id": f"{conv_id}-{i}",
                        "conversation_id": conv_id,
                        "turn_index": i,
                        "role": "user" if who == 0 else "assistant",
                        "text": msg["text"],
                        "user_hash": schema.UserHasher("t")(msg["sender"]),
                        "source": "external",
                        "day": date(2018, 1, 1),
                    }
                )
                i += 1
    df = pl.DataFrame(rows).with_columns(
        ts=pl.lit(datetime(2018, 1, 1, tzinfo=UTC), dtype=schema.TS),
        **{c: pl.lit(None, dtype=pl.Utf8) for c in ("character_id", "served_by", "surface", "feedback")},
    )
    df = schema.conform(df, schema.CONVERSATIONS)
    result = validate_table("conversations", df)
    assert result.all_passed, result.to_markdown()
    assert df.height > 1000


def test_a_frame_that_breaks_derived_columns_is_reported_not_raised(make):
    df = make.conversations().with_columns(text=pl.col("turn_index"))
    result = validate_table("conversations", df)
    assert not result.success
    names = {o.name for o in result.failed}
    assert {"expect_derived_columns_computable", "expect_exact_contract_dtypes"} <= names
