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
