"""The user-hash salt as an ingest run sees it: the public demo salt is announced in every run's log and in the
tables' metadata, and production mode stops the run on a salt it must not use, naming the setting."""

import json
import logging

import dagster as dg
import pytest

from assets.ingest import ingest
from assets.resources import FlywheelSettings
from pipeline.schema import SALT_ENV

DAY = "2026-01-05"


def _settings(tmp_path, **kwargs) -> FlywheelSettings:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    row = {"conversation_id": "c1", "role": "user", "text": "hello", "ts": f"{DAY}T08:00:00Z", "user_id": "alice"}
    (src / f"{DAY}.jsonl").write_text(json.dumps(row) + "\n")
    return FlywheelSettings(home=str(tmp_path / "home"), source_kind="folder", source_path=str(src), **kwargs)


def test_demo_salt_is_announced_in_every_run_and_in_the_metadata(tmp_path, monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    settings = _settings(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(2):  # the second run replays the first's outputs, and still warns
        result = dg.materialize([ingest], partition_key=DAY, resources={"settings": settings}, instance=instance)
        assert result.success
        logs = [e for e in instance.all_logs(result.run_id) if "PUBLIC demo salt" in (e.user_message or "")]
        assert logs and all(e.level == logging.WARNING for e in logs)
        for mat in result.get_asset_materialization_events():
            assert SALT_ENV in mat.materialization.metadata["user_salt_warning"].value


def test_a_configured_salt_runs_without_the_warning(tmp_path, monkeypatch):
    monkeypatch.setenv(SALT_ENV, "a-long-enough-secret-salt-0123")
    result = dg.materialize([ingest], partition_key=DAY, resources={"settings": _settings(tmp_path)})
    assert result.success
    for mat in result.get_asset_materialization_events():
        assert "user_salt_warning" not in mat.materialization.metadata
    assert not any("PUBLIC demo salt" in (e.message or "") for e in result.all_events)


@pytest.mark.parametrize(
    "salt, match",
    [
        (None, "no user-id salt"),
        ("replace-with-a-long-random-value", "placeholder"),
        ("short-salt", "at least 16"),
    ],
)
def test_production_stops_the_run_on_a_salt_it_must_not_use(tmp_path, monkeypatch, salt, match):
    monkeypatch.delenv(SALT_ENV, raising=False)
    settings = _settings(tmp_path, production=True, user_salt=salt)
    with pytest.raises(Exception, match=match) as err:
        dg.materialize([ingest], partition_key=DAY, resources={"settings": settings})
    assert SALT_ENV in str(err.value) and "openssl rand" in str(err.value)
