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


@dg.asset(deps=[broken])
def downstream():
    return None


@dg.asset(
    check_specs=[
        dg.AssetCheckSpec("usual_size", asset="sizes"),
        dg.AssetCheckSpec("no_gaps", asset="sizes"),
    ]
)
def sizes():
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(
        check_name="usual_size", passed=False, severity=dg.AssetCheckSeverity.WARN, description="3x yesterday"
    )
    yield dg.AssetCheckResult(check_name="no_gaps", passed=True)


def test_the_run_line_counts_passed_warned_and_failed_checks_apart():
    defs = dg.Definitions(assets=[numbers, sizes], jobs=[dg.define_asset_job("job", selection="*")])
    out = io.StringIO()
    result = ProgressView(out=out).run(defs.resolve_job_def("job"), "day", instance=dg.DagsterInstance.ephemeral())
    lines = out.getvalue().splitlines()
    assert result.success  # a failed check that does not block fails no step
    assert "checks 1 passed, 1 warned, 1 failed" in lines[-1]
    assert any(line.split()[:2] == ["warn", "sizes:usual_size"] and "3x yesterday" in line for line in lines)
    assert any(line.split()[:2] == ["FAIL", "numbers:positive"] for line in lines)
    # a run whose checks only warn fails none
    only_warnings = dg.Definitions(assets=[sizes], jobs=[dg.define_asset_job("job", selection="*")])
    out = io.StringIO()
    ProgressView(out=out, steps=False).run(
        only_warnings.resolve_job_def("job"), "day", instance=dg.DagsterInstance.ephemeral()
    )
    assert "checks 1 passed, 1 warned, 0 failed" in out.getvalue().splitlines()[0]


def _run(steps: bool) -> tuple[list[str], dg.ExecuteInProcessResult, dg.DagsterInstance]:
    defs = dg.Definitions(assets=[numbers, broken, downstream], jobs=[dg.define_asset_job("job", selection="*")])
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
    assert "  skip   downstream" in lines  # not run, its upstream failed: one short line
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
    # the run's own line first, then what happened in it
    assert lines[0].startswith("demo job: FAILED") and "slowest" in lines[0]
    assert any("few numbers today" in line for line in lines[1:])
