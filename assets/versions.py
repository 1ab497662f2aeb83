"""Skip a daily step whose inputs, settings and code are unchanged.

A step's *fingerprint* is a hash of its asset's `code_version`, its settings and the content of
every input it reads (the Parquet files of its input partitions; for a cross-day step also the
chain hash of the previous day's state, so a changed earlier day is a changed input). After a step
has published, its fingerprint, data version, metadata and check results are recorded under
``state/steps/<asset>/day=D.json``. When a later run finds the same fingerprint, and the output
still holds what was recorded, the step does no work: it reports the recorded data version (so
Dagster and the UI see the same data, not new data) with `unchanged = true`, and replays its check
results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import dagster as dg

from assets.steps import Published
from pipeline.digest import digest, file_digest
from pipeline.lake import Lake, atomic_write_text


def fingerprint(code_version: str, settings: object, files: Iterable[Path], extra: Iterable[str] = ()) -> str:
    return digest(code_version, repr(settings), *(f"{f.name}:{file_digest(f)}" for f in sorted(files)), *extra)


class StepMemo:
    """The record of one asset's last publish for one day."""

    def __init__(self, home: Path | str, asset: str, day: date, fingerprint: str):
        self.path = Path(home) / "state" / "steps" / asset / f"day={day.isoformat()}.json"
        self.asset, self.day, self.fingerprint = asset, day, fingerprint

    @classmethod
    def for_inputs(
        cls,
        context: dg.AssetExecutionContext,
        home: Path | str,
        lake: Lake,
        inputs: Iterable[str],
        settings: object = None,
        extra: Iterable[str] = (),
    ) -> StepMemo:
        day = date.fromisoformat(context.partition_key)
        code = context.assets_def.code_versions_by_key.get(context.asset_key) or ""
        files = [f for table in inputs for f in lake.files(table, day)]
        return cls(home, context.asset_key.to_user_string(), day, fingerprint(code, settings, files, extra))

    def replay(
        self, outputs: Path | dict[str, Path] | None
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult] | None:
        """The recorded events when nothing changed and each output (one path, or one per asset key)
        still holds what was written; else None."""
        if not self.path.is_file():
            return None
        record = json.loads(self.path.read_text())
        if record["fingerprint"] != self.fingerprint:
            return None
        if isinstance(outputs, Path):
            outputs = {"": outputs}
        versions = {m["asset_key"] or "": m["data_version"] for m in record["materializations"]}
        for key, path in (outputs or {}).items():
            if not path.is_file() or file_digest(path) != versions.get(key):
                return None
        return self._events(record)

    def _events(self, record: dict) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        for m in record["materializations"]:
            yield dg.MaterializeResult(
                asset_key=m["asset_key"],
                metadata={**dg.deserialize_value(m["metadata"], dict), "unchanged": True},
                data_version=dg.DataVersion(m["data_version"]),
            )
        for check in record["checks"]:
            yield dg.AssetCheckResult(
                asset_key=check["asset_key"] or self.asset,
                check_name=check["name"],
                passed=check["passed"],
                severity=dg.AssetCheckSeverity(check["severity"]),
                description=check["description"],
                metadata={**dg.deserialize_value(check["metadata"], dict), "unchanged": True},
            )

    def save(self, events: Published | list[dg.MaterializeResult | dg.AssetCheckResult]) -> None:
        if isinstance(events, Published):
            events = [events.materialization, *events.checks]
        mats = [e for e in events if isinstance(e, dg.MaterializeResult)]
        checks = [e for e in events if isinstance(e, dg.AssetCheckResult)]
        record = {
            "fingerprint": self.fingerprint,
            "materializations": [
                {
                    "asset_key": _key(m.asset_key),
                    "data_version": m.data_version.value if m.data_version else None,
                    "metadata": dg.serialize_value(dict(m.metadata or {})),
                }
                for m in mats
            ],
            "checks": [
                {
                    "asset_key": _key(c.asset_key),
                    "name": c.check_name,
                    "passed": c.passed,
                    "severity": c.severity.value,
                    "description": c.description,
                    "metadata": dg.serialize_value(dict(c.metadata or {})),
                }
                for c in checks
            ],
        }
        atomic_write_text(self.path, json.dumps(record))


def _key(key: dg.AssetKey | str | None) -> str | None:
    return key.to_user_string() if isinstance(key, dg.AssetKey) else key
