"""What a judge needs to be trained, and the record it leaves when the traffic does not offer it.

A judge (the pointwise engagement model, the pairwise preference model) that falls below its minimum is *not
trained*: its folder holds `not_trained.json` (what it counted, the minimum, the fix) instead of weights, the
`reward_model_metrics` table a `training` row that says so, and every gate and readout treats it as insufficient
evidence. A thin window is a fact about the traffic, not an error: the generation goes on with the judges that
have their data, and stops (before any policy is built) only when no judge has.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

NOT_TRAINED_FILE = "not_trained.json"
# the `reward_model_metrics` row a not-trained judge leaves (section, metric); `n` holds its count
NOT_TRAINED_ROW = ("training", "not_trained")

PAIRWISE_FIX = (
    "widen the window (`window_days`), read more earlier days (`max_earlier_days`, 0 = every one) or add human "
    "annotation pairs (`annotations_path`): engagement pairs come from near-identical prompts of different "
    "conversations, which traffic of specific questions rarely repeats"
)
POINTWISE_FIX = (
    "widen the window (`window_days`) or read more earlier days (`max_earlier_days`, 0 = every one): the model "
    "learns from served replies after which the user went on or stopped, and needs both"
)


@dataclass(frozen=True)
class JudgeMinimums:
    """The least training data each judge is trained on; below it the judge is recorded as not trained."""

    min_pairs: int = field(
        default=10,
        metadata={
            "help": "Fewest preference pairs (engagement-derived plus annotation) the pairwise judge trains on; a "
            "Bradley-Terry head on fewer learns the pairs by heart."
        },
    )
    min_pointwise_rows: int = field(
        default=20, metadata={"help": "Fewest served replies with an engagement label the pointwise judge trains on."}
    )
    min_pointwise_per_class: int = field(
        default=5,
        metadata={
            "help": "Fewest replies of each outcome (the user went on, the user stopped) among them: a model that "
            "has seen one outcome only scores every reply alike."
        },
    )

    def __post_init__(self) -> None:
        for name in ("min_pairs", "min_pointwise_rows", "min_pointwise_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1 (default {_default(name)})")
        if self.min_pointwise_rows < 2 * self.min_pointwise_per_class:
            raise ValueError(
                f"min_pointwise_rows={self.min_pointwise_rows} must be at least twice min_pointwise_per_class="
                f"{self.min_pointwise_per_class}: both outcomes must fit"
            )


def _default(name: str) -> Any:
    return JudgeMinimums.__dataclass_fields__[name].default


@dataclass(frozen=True)
class Shortfall:
    """A judge's training data below its minimum: what was counted, in which unit, and how to add more."""

    judge: str
    unit: str
    count: int
    minimum: int
    fix: str

    @property
    def reason(self) -> str:
        return f"not trained: {self.count} {self.unit} (minimum {self.minimum})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"trained": False, "reason": self.reason}


def pairwise_shortfall(pairs: int, minimums: JudgeMinimums) -> Shortfall | None:
    if pairs >= minimums.min_pairs:
        return None
    return Shortfall("pairwise", "preference pairs", int(pairs), minimums.min_pairs, PAIRWISE_FIX)


def pointwise_shortfall(labels: pl.Series, minimums: JudgeMinimums) -> Shortfall | None:
    """`labels`: the `continued` label of every training row (nulls are unlabelled and do not count)."""
    known = labels.drop_nulls().cast(pl.Boolean)
    went_on, stopped = int(known.sum()), int(known.len() - known.sum())
    if known.len() < minimums.min_pointwise_rows:
        return Shortfall("pointwise", "labelled replies", known.len(), minimums.min_pointwise_rows, POINTWISE_FIX)
    if min(went_on, stopped) < minimums.min_pointwise_per_class:
        unit = "replies after which the user " + ("stopped" if stopped < went_on else "went on")
        return Shortfall("pointwise", unit, min(went_on, stopped), minimums.min_pointwise_per_class, POINTWISE_FIX)
    return None


def write_not_trained(directory: Path, shortfall: Shortfall) -> Path:
    """The judge's folder as a record of why it holds no model (written into a staging folder by the caller)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / NOT_TRAINED_FILE
    path.write_text(json.dumps(shortfall.to_dict(), indent=2) + "\n")
    (directory / "README.md").write_text(
        f"# {shortfall.judge} reward model: not trained\n\n{shortfall.reason}.\n\nTo train it: {shortfall.fix}.\n"
    )
    return path


def not_trained(directory: str | Path) -> dict[str, Any] | None:
    """The shortfall a judge's folder records, or None when the folder holds a trained model."""
    path = Path(directory) / NOT_TRAINED_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def not_trained_row(shortfall: Shortfall) -> dict[str, Any]:
    """The `reward_model_metrics` row (EVAL_METRICS columns) of a judge that was not trained."""
    section, metric = NOT_TRAINED_ROW
    return {
        "section": section,
        "metric": metric,
        "value": None,
        "length_baseline": None,
        "random_baseline": None,
        "n": shortfall.count,
        "flag": True,
        "detail": f"{shortfall.reason}; {shortfall.fix}",
    }
