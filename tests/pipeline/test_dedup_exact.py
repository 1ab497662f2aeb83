"""Exact dedup: normalized hashes, drops with the kept row, cross-day re-runs and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import schema
from pipeline.dedup_exact import EXACT_DUPLICATE, SEEN_PREFIX, STAGE_EXACT, ExactDedupConfig, exact_dedup
from pipeline.history import HistoryOrderError
from pipeline.text_hash import normalized_text_hashes
from tests.pipeline.dedup_frames import D1, D2, D3, exact_chain, prompt_frame


def test_exact_dedup_keeps_first_by_id_and_reports_drops() -> None:
    df = prompt_frame(
        [
            ("p3", "Hi there, friend!"),
            ("p1", "hi there friend"),
            ("p2", "something else"),
            ("p4", "HI THERE FRIEND"),
        ]
    )
    res = exact_dedup(df)
    assert res.kept["prompt_id"].to_list() == ["p1", "p2"]  # input order kept, p1 first by id
    assert res.drops.schema == schema.DROPS
    assert sorted(res.drops["row_id"].to_list()) == ["p3", "p4"]
    assert set(res.drops["kept_id"]) == {"p1"}
    assert set(res.drops["reason_code"]) == {EXACT_DUPLICATE} and set(res.drops["stage"]) == {STAGE_EXACT}
    assert res.kept["text_hash"].to_list() == normalized_text_hashes(["hi there friend", "something else"])
    assert res.counters.as_dict() == {
        "rows_in": 4,
        "rows_kept": 2,
        "exact_within": 2,
        "exact_cross_day": 0,
        "history_days": 0,
    }
    assert res.counters.dup_rate == 0.5
    raw = exact_dedup(df, config=ExactDedupConfig(normalize=False))
    assert raw.kept.height == 4


def test_exact_dedup_cross_day_and_rerun(tmp_path: Path) -> None:
    chain = exact_chain(tmp_path)
    day1 = prompt_frame([("a1", "good morning everyone"), ("a2", "what is for lunch")], D1)
    exact_dedup(day1, history=chain)
    day2 = prompt_frame([("b1", "Good morning, everyone!"), ("b2", "brand new text"), ("b3", "brand new text")], D2)
    r2 = exact_dedup(day2, history=chain)
    assert r2.kept["prompt_id"].to_list() == ["b2"]
    drops = {r["row_id"]: r for r in r2.drops.iter_rows(named=True)}
    assert drops["b1"]["kept_id"] == SEEN_PREFIX + normalized_text_hashes(["good morning everyone"])[0]
    assert drops["b3"]["kept_id"] == "b2"
    assert str(D1) in drops["b1"]["detail"]
    assert r2.counters.exact_cross_day == 1 and r2.counters.exact_within == 1
    # the history holds day 2 after its first run; a re-run of day 2 must ignore it
    again = exact_dedup(day2, history=chain)
    assert again.kept.equals(r2.kept) and again.drops.equals(r2.drops)
    # day 3 cannot run before day 2 of another history, and names the missing day
    with pytest.raises(HistoryOrderError, match=str(D2)):
        exact_dedup(prompt_frame([("c1", "x")], D3), history=exact_chain(tmp_path / "other"))


def test_exact_dedup_bad_rows_and_columns() -> None:
    df = prompt_frame([("x1", None), ("x2", "!!!"), ("x3", "ok")])  # type: ignore[list-item]
    res = exact_dedup(df)
    # null and punctuation-only texts normalize to "" and collapse into one kept row
    assert res.kept["prompt_id"].to_list() == ["x1", "x3"]
    with pytest.raises(ValueError, match="id_col"):
        exact_dedup(df, id_col="message_id")
    nodays = exact_dedup(df.drop("day"), day_col=None)
    assert nodays.drops["day"].null_count() == 1
