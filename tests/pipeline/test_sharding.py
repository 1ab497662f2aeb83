"""Shard and worker settings: defaults that suit the machine, and bad values refused by name."""

import pytest

from pipeline.sharding import ShardConfig, int_from_env, machine_cores


def test_defaults_give_one_worker_per_core_and_one_shard_per_worker():
    config = ShardConfig()
    assert config.workers == machine_cores() and config.resolved_shards == config.workers
    assert ShardConfig(workers=2).threads_per_worker(cores=8) == 4
    assert ShardConfig(workers=4).threads_per_worker(cores=2) == 1
    assert ShardConfig(workers=2, shards=8).resolved_shards == 8


@pytest.mark.parametrize(
    ("kwargs", "named"), [({"workers": 0}, "FLYWHEEL_WORKERS"), ({"shards": -1}, "FLYWHEEL_SHARDS")]
)
def test_bad_values_name_the_setting_and_the_fix(kwargs, named):
    with pytest.raises(ValueError, match=named):
        ShardConfig(**kwargs)


def test_environment_values_must_be_integers(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_SHARDS", "four")
    with pytest.raises(ValueError, match=r"FLYWHEEL_SHARDS='four'.*`shards`"):
        int_from_env("shards", "FLYWHEEL_SHARDS", 0)
    monkeypatch.setenv("FLYWHEEL_SHARDS", " 4 ")
    assert int_from_env("shards", "FLYWHEEL_SHARDS", 0) == 4
