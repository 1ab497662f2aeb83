"""What the daily data-quality report shows: the counts per stage and every optional input, gathered by the
caller (`quality.daily`) before anything is rendered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from quality.drift import DriftConfig, PSIResult, psi_categorical, psi_numeric
from quality.outcomes import CheckOutcome, SuiteResult


@dataclass
class StageCount:
    """Rows into and out of one pipeline stage, and why the difference was dropped."""

    stage: str
    rows_in: int | None = None
    rows_out: int | None = None
    dropped_by_reason: Mapping[str, int] = field(default_factory=dict)

    @property
    def rows_dropped(self) -> int | None:
        if self.dropped_by_reason:
            return int(sum(self.dropped_by_reason.values()))
        if self.rows_in is not None and self.rows_out is not None:
            return self.rows_in - self.rows_out
        return None


@dataclass
class ReportInputs:
    """Everything the daily report shows. Leave a field None when its stage has not run."""

    day: str | date
    stages: Sequence[StageCount] | None = None
    records_read: int | None = None
    quarantine_reasons: Mapping[str, int] | None = None
    # files the source refused or could not read to their end: (file, reason code, detail)
    unread_files: Sequence[tuple[str, str, str]] | None = None
    pii_counts: Mapping[str, int] | None = None
    dup_rates: Mapping[str, float] | None = None
    cluster_shares: Mapping[str, float] | None = None
    previous_cluster_shares: Mapping[str, float] | None = None
    text_lengths: Sequence[float] | np.ndarray | None = None
    previous_text_lengths: Sequence[float] | np.ndarray | None = None
    length_drift: PSIResult | None = None
    cluster_drift: PSIResult | None = None
    checks: Sequence[SuiteResult | CheckOutcome] | None = None
    title: str = "CharacterFlywheel · daily data quality"
    drift_config: DriftConfig | None = None

    def __post_init__(self) -> None:
        for kind, rate in (self.dup_rates or {}).items():
            if rate is not None and not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"dup_rates[{kind!r}]={rate}: a dup rate is a fraction in [0, 1]")
        for name in ("quarantine_reasons", "pii_counts"):
            for key, n in (getattr(self, name) or {}).items():
                if n < 0:
                    raise ValueError(f"{name}[{key!r}]={n}: counts are >= 0")

    def resolved_length_drift(self) -> PSIResult | None:
        if self.length_drift is not None:
            return self.length_drift
        if self.text_lengths is not None and self.previous_text_lengths is not None:
            return psi_numeric(
                self.previous_text_lengths, self.text_lengths, name="text_length", config=self.drift_config
            )
        return None

    def resolved_cluster_drift(self) -> PSIResult | None:
        if self.cluster_drift is not None:
            return self.cluster_drift
        if self.cluster_shares and self.previous_cluster_shares:
            return psi_categorical(
                self.previous_cluster_shares, self.cluster_shares, name="cluster_shares", config=self.drift_config
            )
        return None
