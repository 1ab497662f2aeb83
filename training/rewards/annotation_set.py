"""The frames an annotation import yields: one per annotation kind, the preference pairs a Bradley-Terry model
trains on, and what was quarantined or dropped.

`pairs` (schema `PAIRS`) holds the `prompt` messages, the `chosen` and `rejected` responses, `source` and
`margin`, how strongly the source prefers `chosen`, from 0 (unknown or slight) to 1: an annotated strength s
gives s / 3, no strength 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipeline import schema

KINDS = ("pointwise", "pairwise", "rewrite", "steerability")
STRENGTHS = (1, 2, 3)
TIE_STAGE = "annotation_pairs"

PAIRS = pl.Schema({**schema.PREFERENCE_PAIR, "day": pl.Date})
_COMMON = {"annotation_id": pl.Utf8, "prompt_id": pl.Utf8, "prompt": pl.List(schema.MESSAGE)}
_TAIL = {"annotator": pl.Utf8, "day": pl.Date, "source_file": pl.Utf8, "line": pl.Int64}
POINTWISE = pl.Schema(
    {
        **_COMMON,
        "response": pl.Utf8,
        "rating": pl.Int8,
        "false_refusal": pl.Boolean,
        "templated": pl.Boolean,
        "answers": pl.Utf8,
        **_TAIL,
    }
)
PAIRWISE = pl.Schema(
    {**_COMMON, "response_a": pl.Utf8, "response_b": pl.Utf8, "preferred": pl.Utf8, "strength": pl.Int8, **_TAIL}
)
REWRITES = pl.Schema({**_COMMON, "original": pl.Utf8, "rewrite": pl.Utf8, **_TAIL})
STEERABILITY = pl.Schema(
    {**_COMMON, "response": pl.Utf8, "character_id": pl.Utf8, "violated_instructions": pl.List(pl.Utf8), **_TAIL}
)
FRAMES = {"pointwise": POINTWISE, "pairwise": PAIRWISE, "rewrite": REWRITES, "steerability": STEERABILITY}


@dataclass
class AnnotationSet:
    """The frames one import produced. Every input line lands in exactly one frame row or quarantine."""

    pointwise: pl.DataFrame = field(default_factory=lambda: schema.empty(POINTWISE))
    pairwise: pl.DataFrame = field(default_factory=lambda: schema.empty(PAIRWISE))
    rewrites: pl.DataFrame = field(default_factory=lambda: schema.empty(REWRITES))
    steerability: pl.DataFrame = field(default_factory=lambda: schema.empty(STEERABILITY))
    pairs: pl.DataFrame = field(default_factory=lambda: schema.empty(PAIRS))
    quarantine: pl.DataFrame = field(default_factory=lambda: schema.empty(schema.QUARANTINE))
    drops: pl.DataFrame = field(default_factory=lambda: schema.empty(schema.DROPS))
    records_read: int = 0

    def counts(self) -> dict[str, Any]:
        """Row counts per frame and quarantine reasons, for asset metadata."""
        reasons = self.quarantine.group_by("reason_code").len().sort("reason_code").rows()
        return {
            "records_read": self.records_read,
            "pointwise": self.pointwise.height,
            "pairwise": self.pairwise.height,
            "rewrites": self.rewrites.height,
            "steerability": self.steerability.height,
            "pairs": self.pairs.height,
            "quarantined": self.quarantine.height,
            "quarantine_reasons": dict(reasons),
            "ties": self.drops.height,
        }

    @staticmethod
    def concat(sets: Iterable[AnnotationSet]) -> AnnotationSet:
        sets = list(sets)
        out = AnnotationSet(records_read=sum(s.records_read for s in sets))
        for name in ("pointwise", "pairwise", "rewrites", "steerability", "pairs", "quarantine", "drops"):
            frames = [getattr(out, name)] + [getattr(s, name) for s in sets]
            setattr(out, name, pl.concat(frames, how="vertical"))
        return out
