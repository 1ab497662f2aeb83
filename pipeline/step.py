"""The one result shape of a curation step: kept rows, drops with reason codes, typed counters.

Counters are a frozen dataclass per step, so a renamed or missing counter fails where it is read
(an AttributeError), never silently as a zero. `rows_in` and `rows_kept` are in every step's
counters: they are what the conservation check (rows in = kept + dropped) is made of.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Generic, TypeVar

import polars as pl

from pipeline import schema


@dataclass(frozen=True)
class StepCounters:
    rows_in: int
    rows_kept: int

    @property
    def rows_dropped(self) -> int:
        return self.rows_in - self.rows_kept

    def as_dict(self) -> dict[str, int | float | str]:
        return asdict(self)


C = TypeVar("C", bound=StepCounters)


@dataclass(frozen=True)
class StepResult(Generic[C]):
    kept: pl.DataFrame
    drops: pl.DataFrame  # schema.DROPS
    counters: C
    # frames a step reports beside its rows (PII counts per type, sampling shares), by table name
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(kept, drops), for unpacking where the counters are not needed."""
        return self.kept, self.drops

    def __post_init__(self) -> None:
        if self.drops.schema != schema.DROPS:
            raise ValueError(f"a step's drops must follow schema.DROPS, got {dict(self.drops.schema)}")
        if self.counters.rows_kept != self.kept.height:
            raise ValueError(f"counters say {self.counters.rows_kept} rows kept, the frame holds {self.kept.height}")
