"""A concise terminal view of Dagster runs: one line per step with its time.

Dagster's console logger prints every event of a run at DEBUG, hundreds of lines. The full event log
is stored in the instance whatever the loggers are, so the UI (`make ui`) still shows all of it; the
terminal only needs what a person watches for: each step as it ends, with its time, warnings and
errors (each once per run), failed checks, and the run's outcome. The libraries' loggers that the instance
captures into the event log (`python_logs` in dagster.yaml) reach the terminal through this view only.

    view = ProgressView()
    result = view.run(defs.resolve_job_def("consolidation"), "consolidation 2026-01-14",
                      instance=instance, partition_key="2026-01-14")

`ProgressView(steps=False)` prints one line per run instead (its slowest step named), for loops over
many partitions. `quiet_libraries()` turns off the libraries' progress bars and chatter in this process
and in the training subprocesses it starts, which inherit its environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

import dagster as dg

# progress bars and info chatter of the ML stack; a value the user set wins
QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}


def quiet_libraries() -> None:
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    # Dagster's notes that an API it calls itself is in preview say nothing about the run
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)


@contextmanager
def _captured_loggers_stay_in_the_run(instance: dg.DagsterInstance | None) -> Iterator[None]:
    """Stop the instance's managed Python loggers from propagating during a run. Dagster's handler sits on
    each of them and passes their records to the run's loggers, this view among them, after rewriting the
    record's message; propagated on, the same record would also reach the root logger's handlers (any a
    library installed) and print a second time, raw."""
    names = [] if instance is None else [n for n in instance.managed_python_loggers if n != "root"]
    loggers = [logging.getLogger(n) for n in names]
    before = [log.propagate for log in loggers]
    for log in loggers:
        log.propagate = False
    try:
        yield
    finally:
        for log, propagate in zip(loggers, before, strict=True):
            log.propagate = propagate


def _seconds(value: float) -> str:
    return f"{value:6.1f}s" if value < 600 else f"{value / 60:5.1f}min"


class _StepLines(logging.Handler):
    """Turns the run's log records into lines: a step's end with its time, failed checks, warnings."""

    def __init__(self, view: ProgressView):
        super().__init__(logging.DEBUG)
        self.view = view
        self.started: dict[str, float] = {}
        self.durations: dict[str, float] = {}
        self.checks_passed = 0
        # a warning is not a failure: a day whose checks only warn reads "0 failed"
        self.checks_warned: list[str] = []
        self.checks_failed: list[str] = []
        # a warning logged both by a step and by the library it calls (captured from Python logging),
        # or on each of a step's retries, is one line in the terminal; the event log keeps each record
        self.warnings_shown: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key") or (event.step_key if event is not None else None)
        if event is None:
            message = str(meta.get("orig_message", record.getMessage()))
            if step and record.levelno >= logging.ERROR and "Not executing" in message:
                # the engine skips a step whose upstream failed: one short line, the cause was printed already
                self.view.detail(f"  skip   {step}")
            elif record.levelno >= logging.WARNING:
                where = f"{step}: " if step else ""
                text = f"  {record.levelname.lower():6} {where}{message}"
                if text not in self.warnings_shown:
                    self.warnings_shown.add(text)
                    self.view.detail(text)
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.started[step] = record.created
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            data = event.event_specific_data
            seconds = (
                data.duration_ms / 1000
                if kind == "STEP_SUCCESS" and getattr(data, "duration_ms", None) is not None
                else record.created - self.started.get(step, record.created)
            )
            self.durations[step] = seconds
            if self.view.steps:
                mark = "ok" if kind == "STEP_SUCCESS" else "FAILED"
                self.view.line(f"  {mark:6} {step:<34} {_seconds(seconds)}")
            if kind == "STEP_FAILURE" and getattr(data, "error", None) is not None:
                error = data.error
                while error.cause is not None:  # the user's exception, not Dagster's wrapper of it
                    error = error.cause
                self.view.detail(f"         {error.message.strip().splitlines()[-1][:200]}")
        elif kind == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            if check.passed:
                self.checks_passed += 1
            else:
                failed = check.severity == dg.AssetCheckSeverity.ERROR
                severity = "FAIL" if failed else "warn"
                name = f"{check.asset_key.to_user_string()}:{check.check_name}"
                (self.checks_failed if failed else self.checks_warned).append(name)
                detail = (check.description or "").splitlines()[0][:140] if check.description else ""
                self.view.detail(f"  {severity:6} {name}  {detail}")
        elif kind == "STEP_SKIPPED" and self.view.steps:
            self.view.line(f"  skip   {step}")


@dataclass
class ProgressView:
    """Runs jobs in process with a concise log in the terminal (see the module docstring)."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    steps: bool = True  # one line per step; False: one line per run

    def __post_init__(self) -> None:
        self._held: list[str] = []

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def detail(self, text: str) -> None:
        """A line about the run in progress: printed now in step mode, else after the run's own line."""
        if self.steps:
            self.line(text)
        else:
            self._held.append(text)

    def logger(self, lines: _StepLines) -> dg.LoggerDefinition:
        @dg.logger(description="one line per step in the terminal; the event log keeps everything")
        def progress(_init_context) -> logging.Logger:
            log = logging.getLogger("assets.progress")
            log.handlers, log.propagate = [lines], False
            log.setLevel(logging.DEBUG)
            return log

        return progress

    def run(self, job: dg.JobDefinition, label: str, **execute: object) -> dg.ExecuteInProcessResult:
        """`job.execute_in_process(**execute)` (raise_on_error defaults to False) with this view's log."""
        lines = _StepLines(self)
        if self.steps:
            self.line(f"{label}:")
        t0 = time.perf_counter()
        execute.setdefault("raise_on_error", False)
        # a logger runs only when the run config names it; the console logger is used otherwise
        execute["run_config"] = {**dict(execute.get("run_config") or {}), "loggers": {"progress": {}}}
        instance = execute.get("instance")
        with _captured_loggers_stay_in_the_run(instance if isinstance(instance, dg.DagsterInstance) else None):
            result = job.with_logger_defs({"progress": self.logger(lines)}).execute_in_process(**execute)
        status = "ok" if result.success else "FAILED"
        parts = [f"{status} in {time.perf_counter() - t0:.1f}s", f"{len(lines.durations)} steps"]
        if lines.checks_passed or lines.checks_warned or lines.checks_failed:
            parts.append(
                f"checks {lines.checks_passed} passed, {len(lines.checks_warned)} warned, "
                f"{len(lines.checks_failed)} failed"
            )
        if not self.steps and lines.durations:
            slowest = max(lines.durations, key=lines.durations.get)
            parts.append(f"slowest {slowest} {lines.durations[slowest]:.1f}s")
        self.line(f"{label}: {', '.join(parts)} (run {result.run_id[:8]})")
        for text in self._held:
            self.line(text)
        self._held.clear()
        return result
