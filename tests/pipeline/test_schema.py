from datetime import date

import polars as pl
import pytest

from pipeline import schema


def test_conform_casts_and_orders_columns():
    df = pl.DataFrame(
        {
            "raw": ["{}"],
            "line": [3],
            "day": [date(2026, 1, 2)],
            "source_file": ["a.jsonl"],
            "reason_code": ["invalid_json"],
            "detail": ["x"],
        }
    )
    out = schema.conform(df, schema.QUARANTINE)
    assert out.columns == schema.QUARANTINE.names()
    assert out.schema == schema.QUARANTINE


def test_conform_names_missing_columns():
    with pytest.raises(ValueError, match="reason_code"):
        schema.conform(pl.DataFrame({"day": [date(2026, 1, 1)]}), schema.QUARANTINE)


def test_user_hasher_is_keyed_and_stable(monkeypatch):
    monkeypatch.delenv(schema.SALT_ENV, raising=False)
    a = schema.UserHasher("salt-a")
    b = schema.UserHasher("salt-b")
    assert a("alice") == a("alice")
    assert a("alice") != b("alice")
    assert "alice" not in a("alice")
    assert a("alice").startswith("u_")


def test_production_refuses_missing_or_demo_salt(monkeypatch):
    monkeypatch.delenv(schema.SALT_ENV, raising=False)
    assert schema.UserHasher.from_settings().salt == schema.DEMO_SALT
    with pytest.raises(schema.SaltError, match=schema.SALT_ENV):
        schema.UserHasher.from_settings(production=True)
    with pytest.raises(schema.SaltError, match="demo salt"):
        schema.UserHasher.from_settings(schema.DEMO_SALT, production=True)
    monkeypatch.setenv(schema.SALT_ENV, "a-real-secret")
    assert schema.UserHasher.from_settings(production=True).salt == "a-real-secret"


def test_drop_rows_collected_one_by_one_become_a_drops_frame():
    rows = [schema.drop_row("winrate", "p1", "missing_in_new"), {"row_id": "p2", "reason_code": "x", "extra": [1]}]
    out = schema.drops_frame(rows, stage="winrate")
    assert out.schema == schema.DROPS
    assert out.select("stage", "row_id", "reason_code").rows() == [
        ("winrate", "p1", "missing_in_new"),
        ("winrate", "p2", "x"),
    ]
    assert out["detail"].null_count() == 2 and schema.drops_frame([], stage="s").is_empty()


def test_drops_of_a_frame_take_its_day_when_it_has_one():
    removed = pl.DataFrame({"day": [date(2026, 1, 2)], "prompt_id": ["p1"], "why": ["short"]})
    out = schema.drops_of(removed, "sampling", "prompt_id", "why", pl.lit("too short"))
    assert out.schema == schema.DROPS
    assert out.row(0) == (date(2026, 1, 2), "sampling", "p1", "short", None, "too short")
    undated = schema.drops_of(removed.drop("day"), "sampling", pl.col("prompt_id"), pl.lit("tie"))
    assert undated.row(0) == (None, "sampling", "p1", "tie", None, None)
