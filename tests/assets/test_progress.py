"""The terminal progress view: one line per step, failed checks and warnings; the event log keeps everything."""

import io

import dagster as dg

from assets.progress import ProgressView


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
def numbers(context: dg.AssetExecutionContext):
    context.log.info("an info line the terminal does not need")
    context.log.warning("few numbers today")
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(check_name="positive", passed=False, description="2 negative numbers")


@dg.asset(deps=[numbers])
def broken():
    raise ValueError("the input is empty: materialize numbers first")


def _run(steps: bool) -> tuple[list[str], dg.ExecuteInProcessResult, dg.DagsterInstance]:
    defs = dg.Definitions(assets=[numbers, broken], jobs=[dg.define_asset_job("job", selection="*")])
    out, instance = io.StringIO(), dg.DagsterInstance.ephemeral()
    result = ProgressView(out=out, steps=steps).run(defs.resolve_job_def("job"), "demo job", instance=instance)
    return out.getvalue().splitlines(), result, instance


def test_one_line_per_step_with_failures_checks_and_warnings():
    lines, result, instance = _run(steps=True)
    assert not result.success
    assert lines[0] == "demo job:"
    assert any(line.split()[:2] == ["ok", "numbers"] and line.endswith("s") for line in lines)
    assert any(line.split()[:2] == ["FAILED", "broken"] for line in lines)
    assert any("the input is empty" in line for line in lines)
    assert any("numbers:positive" in line and "2 negative numbers" in line for line in lines)
    assert any("few numbers today" in line for line in lines)
    assert not any("an info line" in line or "STEP_START" in line for line in lines)
    assert lines[-1].startswith("demo job: FAILED in ") and "2 steps" in lines[-1] and "1 failed" in lines[-1]
    assert len(lines) <= 8
    # the terminal is concise, the run's event log is complete
    stored = {r.dagster_event.event_type_value for r in instance.all_logs(result.run_id) if r.dagster_event}
    assert {"STEP_START", "STEP_OUTPUT", "ASSET_MATERIALIZATION", "STEP_FAILURE"} <= stored
    messages = [r.user_message for r in instance.all_logs(result.run_id)]
    assert "an info line the terminal does not need" in messages


def test_one_line_per_run_names_the_slowest_step():
    lines, _, _ = _run(steps=False)
    assert not any(line.startswith("  ok") for line in lines)
    assert lines[-1].startswith("demo job: FAILED") and "slowest" in lines[-1]
