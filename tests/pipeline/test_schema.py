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
    monkeypatch.setenv(schema.SALT_ENV, "a-real-secret-of-32-characters!!")
    assert schema.UserHasher.from_settings(production=True).salt == "a-real-secret-of-32-characters!!"


@pytest.mark.parametrize(
    "salt, match",
    [
        ("replace-with-a-long-random-value", "placeholder of deploy/k8s/secret.example.yaml"),
        (" replace-with-a-long-random-value\n", "placeholder"),
        ("x", "has 1 characters; production needs at least 16"),
        ("fifteen-chars!!", "at least 16"),
    ],
)
def test_production_refuses_public_and_short_salts_naming_the_setting_and_the_fix(salt, match):
    with pytest.raises(schema.SaltError, match=match) as err:
        schema.UserHasher.from_settings(salt, production=True)
    assert schema.SALT_ENV in str(err.value) and "openssl rand -hex 32" in str(err.value)
    assert schema.UserHasher.from_settings("sixteen-chars-ok", production=True).salt == "sixteen-chars-ok"


def test_demo_salt_warns_on_every_use_and_never_shows_the_salt(monkeypatch, caplog):
    monkeypatch.delenv(schema.SALT_ENV, raising=False)
    for _ in range(2):
        caplog.clear()
        with caplog.at_level("WARNING", logger="pipeline.schema"):
            hasher = schema.UserHasher.from_settings()
        assert hasher.warning and schema.SALT_ENV in hasher.warning
        assert [r.levelname for r in caplog.records] == ["WARNING"] and "PUBLIC demo salt" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.schema"):
        secret = schema.UserHasher.from_settings("a-salt-of-my-own-42")
    assert secret.warning is None and not caplog.records
    assert "a-salt-of-my-own-42" not in repr(secret)


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
