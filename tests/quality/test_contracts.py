from __future__ import annotations

import json
from datetime import date

import polars as pl
import pytest

from pipeline import schema
from quality.contracts import (
    check_ingest_conservation,
    check_ingest_stats,
    check_prompt_history,
    check_split_disjoint,
    check_stage_conservation,
    history_violations,
)


def _msg(role, content):
    return {"role": role, "content": content}


def _prompts(histories: list[list[dict]], last_user: list[str | None] | None = None) -> pl.DataFrame:
    df = pl.DataFrame(
        {"prompt_id": [f"p{i}" for i in range(len(histories))], "history": histories},
        schema_overrides={"history": pl.List(schema.MESSAGE)},
    )
    if last_user is not None:
        df = df.with_columns(last_user=pl.Series(last_user, dtype=pl.Utf8))
    return df


def test_well_formed_histories_pass(make):
    outcome = check_prompt_history(make.prompts())
    assert outcome.passed, outcome.detail
    assert outcome.metadata["rows_checked"] == 12 and outcome.metadata["rows_failed"] == 0


@pytest.mark.parametrize(
    "history, last_user, reason",
    [
        ([], None, "empty_history"),
        ([_msg("user", "a"), _msg("user", "b")], "b", "repeated_role"),
        ([_msg("user", "a"), _msg("assistant", "b")], "a", "last_not_user"),
        ([_msg("assistant", "hi"), _msg("user", "   ")], "   ", "empty_content"),
        ([_msg("user", None)], None, "empty_content"),
        ([_msg("bot", "x"), _msg("user", "y")], "y", "bad_role"),
        ([_msg("system", "be nice"), _msg("user", "y")], "y", "bad_role"),
        ([_msg("user", "hello")], "something else", "last_user_mismatch"),
    ],
)
def test_each_history_fault_is_named(history, last_user, reason):
    good = [_msg("user", "fine"), _msg("assistant", "ok"), _msg("user", "thanks")]
    df = _prompts([good, history], ["thanks", last_user])
    v = history_violations(df)
    assert set(v["row_id"]) == {"p1"}
    assert reason in set(v["reason_code"])
    outcome = check_prompt_history(df)
    assert not outcome.passed
    assert outcome.metadata["rows_failed"] == 1 and outcome.metadata["violations_by_reason"][reason] >= 1
    assert outcome.examples[0]["row_id"] == "p1"
    json.dumps(outcome.to_metadata())


def test_history_details_point_at_the_turn():
    df = _prompts([[_msg("user", "a"), _msg("assistant", "b"), _msg("assistant", "c"), _msg("user", "d")]])
    [row] = history_violations(df).to_dicts()
    assert row == {"row_id": "p0", "reason_code": "repeated_role", "detail": "turns 1 and 2 are both 'assistant'"}


def test_history_check_without_columns_fails_cleanly():
    outcome = check_prompt_history(pl.DataFrame({"prompt_id": ["a"]}))
    assert not outcome.passed and "history" in outcome.detail


def test_split_disjoint(make):
    good = make.prompts()
    outcome = check_split_disjoint(good)
    assert outcome.passed, outcome.detail
    assert outcome.metadata["users_per_split"] == {"eval_internal": 1, "eval_user": 1, "train": 4}

    leak = good.with_columns(
        split=pl.when(pl.col("prompt_id") == "p000").then(pl.lit("eval_user")).otherwise(pl.col("split"))
    )
    outcome = check_split_disjoint(leak)
    assert not outcome.passed
    user = good.filter(pl.col("prompt_id") == "p000")["user_hash"].item()
    assert outcome.examples == [{"user_hash": user, "splits": ["eval_user", "train"]}]
    assert outcome.metadata["overlaps"] == {"eval_user & train": 1}
    assert outcome.metadata["rows_affected"] == good.filter(pl.col("user_hash") == user).height


def test_split_check_needs_its_columns(make):
    outcome = check_split_disjoint(make.prompts(with_split=False))
    assert not outcome.passed and "split" in outcome.detail


def _drops(stage: str, ids: list[str], reasons: list[str | None]) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame(
        {
            "day": [date(2024, 5, 1)] * n,
            "stage": [stage] * n,
            "row_id": ids,
            "reason_code": reasons,
            "kept_id": [None] * n,
            "detail": [None] * n,
        },
        schema=schema.DROPS,
    )


def test_stage_conservation_with_counts():
    assert check_stage_conservation("dedup", rows_in=10, rows_out=7, rows_dropped=3).passed
    bad = check_stage_conservation("dedup", rows_in=10, rows_out=7, rows_dropped=2)
    assert not bad.passed and bad.metadata["unaccounted"] == 1 and "+1 rows unaccounted" in bad.detail
    with pytest.raises(ValueError, match="drops"):
        check_stage_conservation("dedup", rows_in=1, rows_out=1)


def test_stage_conservation_with_frames_and_ids():
    rows_in = pl.DataFrame({"id": ["a", "b", "c", "d", "e"]})
    rows_out = pl.DataFrame({"id": ["a", "b"]})
    drops = pl.concat([_drops("dedup", ["c", "d", "e"], ["exact_duplicate"] * 3), _drops("other", ["zz"], ["x"])])
    ok = check_stage_conservation("dedup", rows_in=rows_in, rows_out=rows_out, drops=drops, id_column="id")
    assert ok.passed, ok.detail
    assert ok.metadata["drops_by_reason"] == {"exact_duplicate": 3}

    # counts balance, but "e" vanished while "a" was both kept and dropped
    swapped = _drops("dedup", ["c", "d", "a"], ["exact_duplicate"] * 3)
    bad = check_stage_conservation("dedup", rows_in=rows_in, rows_out=rows_out, drops=swapped, id_column="id")
    assert not bad.passed
    assert bad.metadata["vanished_ids"] == 1 and bad.metadata["kept_and_dropped"] == 1
    assert {"row_id": "e", "problem": "vanished without a drop record"} in bad.examples


def test_stage_conservation_needs_reasons():
    drops = _drops("pii", ["c"], [None])
    bad = check_stage_conservation("pii", rows_in=3, rows_out=2, drops=drops)
    assert not bad.passed and bad.metadata["drops_without_reason"] == 1
    lazy = check_stage_conservation(
        "pii", rows_in=pl.LazyFrame({"x": [1, 2, 3]}), rows_out=2, drops=_drops("pii", ["c"], ["r"])
    )
    assert lazy.passed


def test_ingest_conservation():
    ok = check_ingest_conservation(100, 97, 3, quarantine_rows=3)
    assert ok.passed and ok.metadata["quarantine_rate"] == 0.03
    assert not check_ingest_conservation(100, 96, 3).passed
    mismatch = check_ingest_conservation(100, 97, 3, quarantine_rows=2)
    assert not mismatch.passed and "quarantine table holds 2" in mismatch.detail


def test_ingest_stats(make):
    stats = pl.DataFrame(
        {
            "day": [date(2024, 5, 1)] * 2,
            "source_kind": ["jsonl", "parquet"],
            "records_read": [50, 10],
            "accepted": [48, 9],
            "quarantined": [2, 1],
        },
        schema=schema.INGEST_STATS,
    )
    assert check_ingest_stats(stats, quarantine=make.quarantine()).passed
    # totals balance but each row does not
    skewed = stats.with_columns(accepted=pl.Series([49, 8], dtype=pl.Int64))
    outcome = check_ingest_stats(skewed)
    assert not outcome.passed and outcome.metadata["unbalanced_stats_rows"] == 2
    assert not check_ingest_stats(stats.drop("accepted")).passed


def test_split_check_allows_one_user_in_two_eval_slices():
    frame = pl.DataFrame({"user_hash": ["u1", "u1", "u2"], "split": ["eval_internal", "eval_user", "train"]})
    assert check_split_disjoint(frame).passed
    leak = frame.with_columns(pl.Series("split", ["eval_internal", "train", "train"]))
    assert not check_split_disjoint(leak).passed
