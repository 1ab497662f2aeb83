"""The fresh-prompts sensor starts no generation while one is about to start or running."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from assets.generation import GenerationSettings
from assets.jobs import fresh_prompts_sensor, generation_job
from assets.resources import FlywheelSettings


def _evaluate(instance: dg.DagsterInstance, home) -> dg.SkipReason | dg.RunRequest:
    resources = {"settings": FlywheelSettings(home=str(home)), "generation": GenerationSettings(min_fresh_prompts=0)}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return fresh_prompts_sensor(context)


@pytest.mark.parametrize(
    "status, starts",
    [
        (dg.DagsterRunStatus.NOT_STARTED, False),
        (dg.DagsterRunStatus.STARTED, False),
        (dg.DagsterRunStatus.SUCCESS, True),
        (dg.DagsterRunStatus.FAILURE, True),
    ],
)
def test_no_second_generation_while_one_is_in_flight(tmp_path, monkeypatch, status, starts):
    import assets.jobs as jobs

    monkeypatch.setattr(jobs, "fresh_prompts", lambda settings: (500, "2026-01-14"))
    with dg.instance_for_test() as instance:
        instance.add_run(dg.DagsterRun(job_name=generation_job.name, run_id=uuid.uuid4().hex, status=status))
        got = _evaluate(instance, tmp_path)
    if starts:
        assert isinstance(got, dg.RunRequest) and got.run_key == "fresh-through-2026-01-14"
    else:
        assert isinstance(got, dg.SkipReason) and status.value.lower() in got.skip_message
