"""Which engagement label the pointwise reward model learns, chosen by measurement.

The logs give three labels of a served reply (`training.rewards.engagement`): `continued`, `reply_len` (the
user's next turn) and `depth_after` (user turns still to come). Each becomes a binary target:

- `continued`: as logged. Replayed chat continues after almost every turn and ends where its recording ended,
  so this label is mostly about where a conversation stops;
- `reply_len`: the user's next turn is longer than the median next turn of the training rows (no reply counts
  as length 0);
- `depth_after`: more user turns follow than the median of the training rows.

Whichever label is learnt, a model can look good by learning only *where* in a conversation a turn sits (late
turns end conversations, early ones have long futures). Discrimination is therefore measured within strata of
turn position (`reward_eval.auc_within_strata`): the AUC inside each stratum (rows with the same `cut_turn`),
averaged with weights by stratum size over the strata that hold both classes. A score that depends on the position alone is constant inside
every stratum and scores exactly 0.5.

`choose_label` fits one model per candidate on the training rows, measures it on validation rows (held-out
users) next to a length-only scorer, and picks the label with the highest stratified AUC (ties: the earlier
candidate). When the validation rows are too few to measure any label, the first learnable candidate is
learnt and its record says it was not chosen by measurement. The measurements frame (`LABEL_MEASUREMENTS`)
records every candidate, so the choice can be checked. The choice is made on the same validation rows that then report the chosen model's metrics, a small
optimism over three candidates that the card states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from training.rewards.base import prompt_contexts
from training.rewards.reward_eval import auc_within_strata

CANDIDATES = ("continued", "reply_len", "depth_after")
# the binary target column a pointwise model learns (`fit_pointwise(label=TARGET)`)
TARGET = "engagement_target"

LABEL_MEASUREMENTS = pl.Schema(
    {
        "label": pl.Utf8,
        # the model's AUC within turn-position strata, and a length-only scorer's
        "stratified_auc": pl.Float64,
        "length_stratified_auc": pl.Float64,
        # the model's AUC over all validation rows, position effects included
        "auc": pl.Float64,
        "positive_rate": pl.Float64,
        "threshold": pl.Float64,
        "rows": pl.Int64,
        "rows_in_strata": pl.Int64,
        "chosen": pl.Boolean,
        "detail": pl.Utf8,
    }
)


@dataclass
class LabelChoiceConfig:
    candidates: tuple[str, ...] = field(
        default=CANDIDATES,
        metadata={
            "help": f"Engagement labels the pointwise reward model may learn, in order of preference: {CANDIDATES}."
        },
    )
    stratum_column: str = field(
        default="cut_turn", metadata={"help": "Column of the turn position that discrimination is stratified by."}
    )
    min_rows_in_strata: int = field(
        default=20,
        metadata={"help": "Fewest validation rows in strata holding both classes for a label to be measured at all."},
    )

    def __post_init__(self) -> None:
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates:
            raise ValueError(f"candidates={self.candidates!r}: choose one or more of {CANDIDATES}")
        if self.min_rows_in_strata < 2:
            raise ValueError(f"min_rows_in_strata={self.min_rows_in_strata} must be at least 2")


def label_thresholds(train: pl.DataFrame, candidates: tuple[str, ...] = CANDIDATES) -> dict[str, float | None]:
    """The medians that binarise `reply_len` and `depth_after`, from the training rows (None for `continued`)."""
    out: dict[str, float | None] = {}
    for label in candidates:
        if label == "continued":
            out[label] = None
        else:
            values = train[label].fill_null(0) if label in train.columns else pl.Series([], pl.Int64)
            out[label] = float(values.median()) if values.len() else 0.0
    return out


def with_target(frame: pl.DataFrame, label: str, threshold: float | None) -> pl.DataFrame:
    """`frame` with the binary target (`TARGET`) of `label`; null where the label is missing."""
    if label not in CANDIDATES:
        raise ValueError(f"label={label!r} is not an engagement label: choose one of {CANDIDATES}")
    if label == "continued":
        target = pl.col("continued")
    elif label == "reply_len":
        # no reply is the shortest reply there is
        target = pl.when(pl.col("continued").is_not_null()).then(pl.col("reply_len").fill_null(0) > threshold)
    else:
        target = pl.col("depth_after") > threshold
    return frame.with_columns(target.cast(pl.Boolean).alias(TARGET))


@dataclass
class LabelChoice:
    label: str
    threshold: float | None
    measurements: pl.DataFrame  # LABEL_MEASUREMENTS, one row per candidate
    model: Any  # the chosen label's model, fitted on the training rows

    def summary(self) -> dict[str, Any]:
        """The choice and every candidate's measurements, for a model's metadata and card."""
        out: dict[str, Any] = {"label": self.label, "threshold": self.threshold}
        for r in self.measurements.iter_rows(named=True):
            for key in ("stratified_auc", "length_stratified_auc", "auc", "positive_rate", "rows_in_strata"):
                if r[key] is not None:
                    out[f"{r['label']}/{key}"] = r[key]
        return out


def _usable(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col(TARGET).is_not_null() & pl.col("served_response").is_not_null())


def _length(frame: pl.DataFrame) -> np.ndarray:
    return np.log1p(frame["served_response"].str.len_chars().to_numpy().astype(np.float64))


def choose_label(
    train: pl.DataFrame,
    validation: pl.DataFrame,
    fit: Callable[[pl.DataFrame], Any],
    config: LabelChoiceConfig | None = None,
) -> LabelChoice:
    """Fit `fit(rows)` (a pointwise model learning `TARGET`, with a `score(contexts, responses)` method) once per
    candidate label on `train`, measure each on `validation` within turn-position strata, and keep the best.
    Raises ValueError when no candidate can be learnt, naming why for each."""
    config = config or LabelChoiceConfig()
    if config.stratum_column not in validation.columns:
        raise ValueError(f"validation rows lack the turn position `{config.stratum_column}` to stratify by")
    thresholds = label_thresholds(train, config.candidates)
    rows, models = [], {}
    for label in config.candidates:
        row: dict[str, Any] = {"label": label, "threshold": thresholds[label], "chosen": False}
        tr = _usable(with_target(train, label, thresholds[label]))
        va = _usable(with_target(validation, label, thresholds[label]))
        y = va[TARGET].to_numpy().astype(bool) if va.height else np.zeros(0, bool)
        strata = va[config.stratum_column].fill_null(-1).to_numpy()
        row |= {"rows": va.height, "positive_rate": float(y.mean()) if len(y) else None}
        if tr[TARGET].n_unique() < 2:
            rows.append(row | {"detail": "one class in the training rows: nothing to learn"})
            continue
        length_sign = 1.0 if roc_auc_score(tr[TARGET].to_numpy(), _length(tr)) >= 0.5 else -1.0
        baseline, in_strata = auc_within_strata(y.astype(np.int8), length_sign * _length(va), strata)
        if in_strata < config.min_rows_in_strata:
            rows.append(
                row
                | {
                    "rows_in_strata": in_strata,
                    "detail": f"{in_strata} validation rows in strata holding both classes "
                    f"(fewer than {config.min_rows_in_strata}): not measurable",
                }
            )
            continue
        model = fit(tr)
        score = np.asarray(model.score(prompt_contexts(va), va["served_response"].to_list()), np.float64)
        measured, _ = auc_within_strata(y.astype(np.int8), score, strata)
        models[label] = model
        rows.append(
            row
            | {
                "stratified_auc": measured,
                "length_stratified_auc": baseline,
                "auc": float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else None,
                "rows_in_strata": in_strata,
            }
        )
    measured = [r for r in rows if r.get("stratified_auc") is not None]
    if measured:
        best = max(measured, key=lambda r: r["stratified_auc"])  # max keeps the first of equals: candidate order
        best["detail"] = "chosen: highest discrimination within turn-position strata"
    else:
        # too few validation rows to measure: the first learnable candidate, and the record says it was not chosen
        # by measurement
        learnable = [r for r in rows if "one class" not in (r.get("detail") or "")]
        if not learnable:
            raise ValueError(
                "no engagement label can be learnt: "
                + "; ".join(f"{r['label']}: {r.get('detail')}" for r in rows)
                + ". Widen the window or `max_earlier_days`"
            )
        best = learnable[0]
        models[best["label"]] = fit(_usable(with_target(train, best["label"], thresholds[best["label"]])))
        best["detail"] = f"chosen by default, not by measurement: {best['detail']}"
    best["chosen"] = True
    frame = pl.DataFrame([{k: r.get(k) for k in LABEL_MEASUREMENTS} for r in rows], schema=LABEL_MEASUREMENTS)
    return LabelChoice(best["label"], thresholds[best["label"]], frame, models[best["label"]])
