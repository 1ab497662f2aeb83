from __future__ import annotations

import polars as pl
import pytest

from quality.suite_config import SuiteConfig
from quality.suites import validate_table
from quality.tables import REGISTRY, TableSuite, register

pytestmark = pytest.mark.usefixtures("gx_runtime")


def test_quarantine_reason_codes(make):
    bad = make.set(make.quarantine(), "reason_code", 0, "oops")
    assert ("expect_column_values_to_be_in_set", "reason_code") in make.failed(validate_table("quarantine", bad))
    # with no configured codes, any snake_case code is accepted and free text is not
    loose = SuiteConfig(quarantine_reason_codes=())
    assert validate_table("quarantine", bad, config=loose).success
    free_text = make.set(make.quarantine(), "reason_code", 0, "Bad JSON!")
    assert ("expect_column_values_to_match_regex", "reason_code") in make.failed(
        validate_table("quarantine", free_text, config=loose)
    )


PROMPT_FAULTS = {
    "duplicate_prompt_id": (
        lambda df, s: s(df, "prompt_id", 1, df["prompt_id"][0]),
        ("expect_column_values_to_be_unique", "prompt_id"),
    ),
    "bad_split": (lambda df, s: s(df, "split", 0, "holdout"), ("expect_column_values_to_be_in_set", "split")),
    "empty_history": (lambda df, s: s(df, "history", 0, []), ("expect_column_values_to_be_between", "_history_turns")),
    "null_last_user": (lambda df, s: s(df, "last_user", 0, None), ("expect_column_values_to_not_be_null", "last_user")),
    "bad_thumbs": (lambda df, s: s(df, "thumbs", 0, 3), ("expect_column_values_to_be_in_set", "thumbs")),
    "text_cluster_id": (
        lambda df, s: df.with_columns(pl.col("cluster_id").cast(pl.Utf8)),
        ("expect_column_values_to_be_of_type", "cluster_id"),
    ),
}


@pytest.mark.parametrize("fault", sorted(PROMPT_FAULTS))
def test_prompts_suite_catches(fault, make):
    breaker, expected = PROMPT_FAULTS[fault]
    result = validate_table("prompts", breaker(make.prompts(), make.set))
    assert expected in make.failed(result), result.to_markdown()
    assert not result.success


def test_prompts_without_optional_columns(make):
    result = validate_table("prompts", make.prompts(with_split=False))
    assert result.all_passed
    assert not {o.column for o in result.outcomes} & {"split", "cluster_id"}


def test_clusters_suite(make):
    good = make.clusters()
    assert validate_table("clusters", good).all_passed
    bad_sum = good.with_columns(share=pl.col("share") * 0.9)
    assert ("expect_column_sum_to_be_between", "share") in make.failed(validate_table("clusters", bad_sum))
    dup = make.set(good, "cluster_id", 1, 0)
    assert ("expect_column_values_to_be_unique", "cluster_id") in make.failed(validate_table("clusters", dup))
    zero = make.set(good, "size", 3, 0)
    assert ("expect_column_values_to_be_between", "size") in make.failed(validate_table("clusters", zero))
    # one cluster eating the traffic is a warning, and shares are derived from sizes when absent
    collapsed = pl.DataFrame({"cluster_id": [0, 1, 2], "size": [90, 5, 5]})
    result = validate_table("clusters", collapsed)
    assert result.success and ("expect_column_max_to_be_between", "share") in make.failed(result)


def test_embeddings_suite_mixed_dimensions(make):
    good = pl.DataFrame({"text_hash": ["a", "b"], "vector": [[0.1, 0.2], [0.3, 0.4]]})
    assert validate_table("embeddings", good).all_passed
    mixed = pl.DataFrame({"text_hash": ["a", "b"], "vector": [[0.1, 0.2], [0.3]]})
    assert ("expect_column_unique_value_count_to_be_between", "_dims") in make.failed(
        validate_table("embeddings", mixed)
    )


def test_registry_accepts_new_tables(make):
    def build(x, cfg, cols):
        return [x.ExpectColumnValuesToBeBetween(column="margin", min_value=0)]

    register(TableSuite(name="test_pairs", not_null=("chosen",), build=build))
    try:
        bad = pl.DataFrame({"chosen": ["a", None], "margin": [0.5, -1.0]})
        assert make.failed(validate_table("test_pairs", bad)) == {
            ("expect_column_values_to_not_be_null", "chosen"),
            ("expect_column_values_to_be_between", "margin"),
        }
    finally:
        REGISTRY.pop("test_pairs")


def test_failure_examples_carry_scrubbed_text_only(make):
    """Examples are saved with the suite result and shown in metadata and reports: never raw PII."""
    email, phone = "jane.roe@example.org", "+1 415 555 0199"
    df = make.set(make.conversations(), "text", 7, f"mail {email} or call {phone} " + "x" * 30_000)
    df = make.set(df, "user_hash", 2, email)  # a raw id where a hash belongs
    result = validate_table("conversations", df)
    shown = str(result.to_json()) + str(result.to_metadata())
    assert email not in shown and phone not in shown
    [length] = [o for o in result.failed if o.name == "expect_column_value_lengths_to_be_between"]
    assert length.examples[0]["value"].startswith("mail [EMAIL] or call [PHONE] x")
    assert length.examples[0]["value"].endswith(f"({30_000 + len(email) + len(phone) + 15} chars)")
    [raw_id] = [o for o in result.failed if o.column == "user_hash"]
    assert raw_id.examples[0]["value"] == "[EMAIL]"
