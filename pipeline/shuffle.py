"""The files a sharded step hands from its plan to its shards and from its shards to its collect step.

They live under ``<home>/shuffle/<run id>/<step>/day=D/``: one folder per run, so two runs of a day never read
each other's files, and a step executed again after a failure finds its plan in place and replaces its own
file. Each file is written atomically (temp file, then rename), so a killed shard leaves no half file for the
collect step to read. The collect step removes the run's folder once the table is published.
"""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.lake import atomic_write_parquet

_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


class Shuffle:
    def __init__(self, home: Path | str, run_id: str, step: str, day: date):
        for label, value in (("run id", run_id), ("step", step)):
            if not _NAME.match(value):
                raise ValueError(f"shuffle {label} {value!r} may hold only letters, digits, '_' and '-'")
        self.run_root = Path(home) / "shuffle" / run_id
        self.dir = self.run_root / step / f"day={day.isoformat()}"

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"shuffle file name {name!r} may hold only letters, digits, '_' and '-'")
        return self.dir / f"{name}.parquet"

    def write(self, name: str, frame: pl.DataFrame) -> Path:
        return atomic_write_parquet(self.path(name), frame)

    def read(self, name: str) -> pl.DataFrame:
        path = self.path(name)
        if not path.is_file():
            raise FileNotFoundError(f"shuffle file {path} is missing: the step that writes it has not run in this run")
        return pl.read_parquet(path)

    def clear(self) -> None:
        """Remove this step's files, and the run's folder once no step of it has files left."""
        shutil.rmtree(self.dir, ignore_errors=True)
        for parent in (self.dir.parent, self.run_root):
            try:
                parent.rmdir()
            except OSError:
                break
