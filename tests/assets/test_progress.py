"""The terminal progress view: one line per step, failed checks and warnings; the event log keeps everything."""

import io
import logging

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


LIBRARY_LOG = "progress_test_library"


@dg.asset
def salted(context: dg.AssetExecutionContext):
    # the same warning from the step and from the library it calls (a logger the instance captures)
    context.log.warning("ids are hashed with the demo salt")
    logging.getLogger(f"{LIBRARY_LOG}.hashing").warning("ids are hashed with the demo salt")
    context.log.warning("a second, different warning")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_warning_is_one_terminal_line_per_run_and_every_record_stays_in_the_event_log():
    defs = dg.Definitions(assets=[salted], jobs=[dg.define_asset_job("job", selection="*")])
    root, raw = logging.getLogger(), _Records()
    root.addHandler(raw)  # stands for the console handler a library may install on the root logger
    overrides = {"python_logs": {"managed_python_loggers": [LIBRARY_LOG], "python_log_level": "INFO"}}
    try:
        with dg.instance_for_test(overrides=overrides) as instance:
            out = io.StringIO()
            for _ in range(2):  # each run says it once
                result = ProgressView(out=out).run(defs.resolve_job_def("job"), "day", instance=instance)
                assert result.success
                messages = [r.user_message for r in instance.all_logs(result.run_id)]
                assert messages.count("ids are hashed with the demo salt") == 2
    finally:
        root.removeHandler(raw)
    lines = out.getvalue().splitlines()
    assert sum("ids are hashed with the demo salt" in line for line in lines) == 2
    assert sum("a second, different warning" in line for line in lines) == 2
    assert not any("demo salt" in m for m in raw.messages)  # the captured record did not also print raw
    assert logging.getLogger(LIBRARY_LOG).propagate  # restored after the run
