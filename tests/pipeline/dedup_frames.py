"""Frames of prompts for one day, and the dedup steps' day chains, as the dedup tests build them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from pipeline.dedup_exact import ExactDedupConfig
from pipeline.dedup_near import NearDedupConfig
from pipeline.history import DayChain

D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)


def prompt_frame(rows: list[tuple[str, str]], day: date = D1, **extra: list) -> pl.DataFrame:
    return pl.DataFrame(
        {"prompt_id": [r[0] for r in rows], "text": [r[1] for r in rows], "day": [day] * len(rows), **extra}
    )


def exact_chain(root: Path, config: ExactDedupConfig | None = None) -> DayChain:
    return DayChain(root, D1, (config or ExactDedupConfig()).history_kind())


def near_chain(root: Path, config: NearDedupConfig | None = None) -> DayChain:
    return DayChain(root, D1, (config or NearDedupConfig()).history_kind())
