"""The local instance's dagster.yaml: the libraries' Python loggers reach the run's event log."""

import logging
from pathlib import Path

import dagster as dg
import yaml

YAML = Path(__file__).resolve().parents[2] / "dagster_home" / "dagster.yaml"


@dg.asset
def logs_from_a_library():
    logging.getLogger("pipeline.lake").info("written by the lake")
    logging.getLogger("some.other.library").info("not managed")


def test_library_loggers_reach_the_event_log(tmp_path):
    config = yaml.safe_load(YAML.read_text())
    assert {"pipeline", "quality", "training", "evaluation"} <= set(config["python_logs"]["managed_python_loggers"])
    with dg.instance_for_test(overrides={"python_logs": config["python_logs"]}) as instance:
        result = dg.materialize([logs_from_a_library], instance=instance)
        messages = [r.user_message for r in instance.all_logs(result.run_id)]
    assert "written by the lake" in messages
    assert "not managed" not in messages
