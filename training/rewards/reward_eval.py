"""Validation of a reward model on held-out data, against trivial baselines, plus an artifact probe.

`evaluate_reward_model` returns one long frame (`EVAL_METRICS`): a row per metric with the model's
value next to a length-only and a random baseline, a `flag` that is true when the row needs
attention, and in `detail` the path of any plot. Sections:

- `pointwise` (held-out prompts with engagement labels): `auc`, `accuracy` (threshold 0.5),
  `ece` (expected calibration error, equal-width bins), `brier`, `log_loss`, plus a reliability
  plot (`plot` section). Calibration rows only exist for pointwise models: a BT utility is not a
  probability. The length-only baseline is a logistic regression on log(1 + response characters)
  fitted on `train_prompts` (cross-fitted on the held-out rows when none are given); the random
  baseline scores uniformly at random (seeded).
- `pairwise` (held-out pairs): `pair_accuracy` (chosen scored above rejected; ties count half),
  overall and per `source`; baselines: the longer response wins, a coin flip.
- `artifact`: how scores move when the same response gets emoji, exclamation marks, a markdown
  list, "As an AI" filler or repeated text. `value` is the mean score change in units of the
  spread (standard deviation) of the unmodified scores, so one tolerance fits probabilities and
  BT utilities; a model that gains more than `artifact_tolerance` pays for the artifact
  (`training.rewards.artifacts`).
- `summary`: `pays_for_artifacts` (count of flagged artifacts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from sklearn import metrics as skm

from training.rewards.artifacts import ARTIFACTS
from training.rewards.base import Messages, RewardModel, pairs_to_lists, prompt_contexts
from training.rewards.reward_splits import pair_folds

EVAL_METRICS = pl.Schema(
    {
        "section": pl.Utf8,
        "metric": pl.Utf8,
        "value": pl.Float64,
        "length_baseline": pl.Float64,
        "random_baseline": pl.Float64,
        "n": pl.Int64,
        "flag": pl.Boolean,
        "detail": pl.Utf8,
    }
)


@dataclass
class RewardEvalConfig:
    artifact_tolerance: float = field(
        default=0.1,
        metadata={
            "help": "Largest mean score gain from an artifact, in standard deviations of the unmodified "
            "scores, before the model is flagged as paying for it."
        },
    )
    max_ece: float = field(default=0.1, metadata={"help": "Expected calibration error above which the row is flagged."})
    n_bins: int = field(
        default=10, metadata={"help": "Equal-width probability bins of the ECE and the reliability plot."}
    )
    probe_size: int = field(default=200, metadata={"help": "Responses the artifact probe modifies (a seeded sample)."})
    min_score_scale: float = field(
        default=1e-3,
        metadata={"help": "Floor of the score spread that scales artifact deltas (a constant scorer has none)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random baseline and the probe sample."})
    min_eval_pairs: int = field(
        default=30,
        metadata={
            "help": "Fewest held-out pairs a pairwise model is judged on. With fewer (a short window mines a few "
            "dozen engagement pairs), pair accuracy is measured by `cv_folds`-fold cross-validation over all "
            "pairs instead, and the saved model is fit on all of them."
        },
    )
    cv_folds: int = field(default=5, metadata={"help": "Folds of that cross-validation (pairs grouped by prompt)."})

    def __post_init__(self) -> None:
        if self.min_eval_pairs < 0:
            raise ValueError(f"min_eval_pairs={self.min_eval_pairs} must be >= 0 (0: always a held-out split)")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds={self.cv_folds} must be at least 2")
        if self.artifact_tolerance < 0:
            raise ValueError(f"artifact_tolerance={self.artifact_tolerance} must be >= 0")
        if self.n_bins < 2:
            raise ValueError(f"n_bins={self.n_bins} must be at least 2")
        if self.probe_size < 1:
            raise ValueError(f"probe_size={self.probe_size} must be at least 1")
        if self.min_score_scale <= 0:
            raise ValueError(f"min_score_scale={self.min_score_scale} must be positive")


def _row(section, metric, value, length=None, random=None, n=None, flag=None, detail=None) -> dict:
    return {
        "section": section,
        "metric": metric,
        "value": None if value is None else float(value),
        "length_baseline": None if length is None else float(length),
        "random_baseline": None if random is None else float(random),
        "n": n,
        "flag": flag,
        "detail": detail,
    }


def artifact_probe(
    model: RewardModel, contexts: list[Messages], responses: list[str], config: RewardEvalConfig | None = None
) -> pl.DataFrame:
    """Score each response unmodified and with each artifact; one `EVAL_METRICS` row per artifact.

    `value`: mean score change / spread of the unmodified scores; `detail` gives the raw mean
    change and the share of responses whose score rose; `flag`: the value exceeds the tolerance.
    """
    config = config or RewardEvalConfig()
    base = np.asarray(model.score(contexts, responses), dtype=np.float64)
    scale = max(float(base.std()), config.min_score_scale)
    rows = []
    for name, transform in ARTIFACTS.items():
        changed = np.asarray(model.score(contexts, [transform(r) for r in responses]), dtype=np.float64)
        delta = changed - base
        scaled = float(delta.mean()) / scale
        rows.append(
            _row(
                "artifact",
                name,
                scaled,
                n=len(responses),
                flag=scaled > config.artifact_tolerance,
                detail=f"mean_delta={delta.mean():.6g} raised={np.mean(delta > 0):.3f} scale={scale:.6g}",
            )
        )
    return pl.DataFrame(rows, schema=EVAL_METRICS)


# -- calibration --------------------------------------------------------------------------------
def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Sum over equal-width bins of (bin share) * |observed rate - mean predicted probability|."""
    y, p = np.asarray(y, dtype=np.float64), np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(ece)


def reliability_plot(
    y: np.ndarray, scores: dict[str, np.ndarray], path: str | Path, n_bins: int = 10, title: str = "Reliability"
) -> Path:
    """Reliability diagram of several probability scorers, written as a PNG (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.calibration import CalibrationDisplay

    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, p) in enumerate(scores.items()):
        CalibrationDisplay.from_predictions(y, np.clip(p, 0, 1), n_bins=n_bins, name=name, ax=ax, ref_line=i == 0)
    ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# -- metrics ------------------------------------------------------------------------------------
def _length_feature(responses: list[str]) -> np.ndarray:
    return np.log1p(np.array([len(r) for r in responses], dtype=np.float64)).reshape(-1, 1)


def _length_probabilities(
    eval_resp: list[str], y: np.ndarray, train: pl.DataFrame | None, seed: int, label: str = "continued"
) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = _length_feature(eval_resp)
    if train is not None and label in train.columns:
        train = train.filter(pl.col(label).is_not_null() & pl.col("served_response").is_not_null())
        if train[label].n_unique() == 2:
            clf = LogisticRegression().fit(_length_feature(train["served_response"].to_list()), train[label].to_numpy())
            return clf.predict_proba(x)[:, 1]
    folds = int(min(5, np.bincount(y.astype(int)).min()))
    if folds < 2:
        return np.full(len(y), y.mean())
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(LogisticRegression(), x, y, cv=cv, method="predict_proba")[:, 1]


def auc_within_strata(y: np.ndarray, score: np.ndarray, strata: np.ndarray) -> tuple[float | None, int]:
    """(AUC averaged over strata weighted by their size, rows in strata with both labels): a model that only
    knows which stratum (turn position) a row is in scores 0.5, since recorded conversations end where their
    recording ended and position alone predicts `continued`. None when no stratum has both labels."""
    total, weight = 0.0, 0
    for value in np.unique(strata):
        m = strata == value
        if len(np.unique(y[m])) == 2:
            total += skm.roc_auc_score(y[m], score[m]) * int(m.sum())
            weight += int(m.sum())
    return (total / weight if weight else None), weight


def pointwise_metrics(
    model: RewardModel,
    prompts: pl.DataFrame,
    config: RewardEvalConfig,
    train_prompts: pl.DataFrame | None = None,
    out_dir: str | Path | None = None,
    label: str = "continued",
) -> list[dict]:
    """Pointwise metrics against the boolean column `label` (what the model learnt; `continued` by default)."""
    df = prompts.filter(pl.col(label).is_not_null() & pl.col("served_response").is_not_null())
    y = df[label].cast(pl.Int8).to_numpy()
    if len(y) == 0:
        return []
    responses = df["served_response"].to_list()
    score = np.asarray(model.score(prompt_contexts(df), responses), dtype=np.float64)
    length = _length_probabilities(responses, y, train_prompts, config.seed, label)
    rand = np.random.default_rng(config.seed).uniform(size=len(y))
    n = len(y)
    rows = []
    both = len(np.unique(y)) == 2
    if both:
        auc = [skm.roc_auc_score(y, s) for s in (score, length, rand)]
        rows.append(_row("pointwise", "auc", *auc, n=n, flag=auc[0] <= max(auc[1], auc[2])))
    if "cut_turn" in df.columns:
        strata = df["cut_turn"].fill_null(-1).to_numpy()
        within = [auc_within_strata(y, s, strata) for s in (score, length, rand)]
        if within[0][0] is not None:
            rows.append(
                _row("pointwise", "auc_within_turn", *(w[0] for w in within), n=within[0][1], detail="by cut_turn")
            )
    rows.append(_row("pointwise", "positive_rate", y.mean(), n=n))
    if model.metadata.get("kind") != "pointwise":
        return rows
    probs = [np.clip(s, 1e-7, 1 - 1e-7) for s in (score, length, rand)]
    acc = [skm.accuracy_score(y, p >= 0.5) for p in probs]
    rows.append(_row("pointwise", "accuracy", *acc, n=n))
    ece = [expected_calibration_error(y, p, config.n_bins) for p in probs]
    rows.append(_row("pointwise", "ece", *ece, n=n, flag=ece[0] > config.max_ece))
    rows.append(_row("pointwise", "brier", *[skm.brier_score_loss(y, p) for p in probs], n=n))
    if both:
        rows.append(_row("pointwise", "log_loss", *[skm.log_loss(y, p, labels=[0, 1]) for p in probs], n=n))
    if out_dir is not None:
        path = reliability_plot(
            y,
            {"model": probs[0], "length-only": probs[1]},
            Path(out_dir) / "reliability.png",
            config.n_bins,
            title=f"p({label}) reliability, n={n}",
        )
        rows.append(_row("plot", "reliability", None, n=n, detail=str(path)))
    return rows


def _pair_accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def _pair_scores(model: RewardModel, pairs: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    contexts, chosen, rejected, _ = pairs_to_lists(pairs)
    s = np.asarray(model.score(contexts + contexts, chosen + rejected), dtype=np.float64)
    return s[: len(chosen)], s[len(chosen) :]


def cross_validated_scores(
    fit: Callable[[pl.DataFrame], RewardModel], pairs: pl.DataFrame, folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (chosen, rejected) scores: each pair scored by a model `fit` on the other folds only."""
    fold = pair_folds(pairs, folds)
    sc, sr = np.zeros(pairs.height), np.zeros(pairs.height)
    for k in range(folds):
        test = fold == k
        if not test.any():
            continue
        train = pairs.filter(pl.Series(~test))
        if train.is_empty():
            raise ValueError(f"fold {k} holds every pair: cross-validation needs pairs of at least 2 prompts")
        sc[test], sr[test] = _pair_scores(fit(train), pairs.filter(pl.Series(test)))
    return sc, sr


def pairwise_metrics(
    model: RewardModel,
    pairs: pl.DataFrame,
    config: RewardEvalConfig,
    scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict]:
    """Pair accuracy against the length-only and random baselines; `scores` (chosen, rejected), e.g.
    out-of-fold ones, replace `model`'s own scores of the pairs."""
    if pairs.height == 0:
        return []
    _, chosen, rejected, _ = pairs_to_lists(pairs)
    sc, sr = scores if scores is not None else _pair_scores(model, pairs)
    lc = np.array([len(c) for c in chosen], dtype=np.float64)
    lr = np.array([len(r) for r in rejected], dtype=np.float64)
    coin = np.random.default_rng(config.seed).integers(0, 2, size=len(chosen)).astype(np.float64)
    sources = pairs["source"].to_list() if "source" in pairs.columns else ["all"] * len(chosen)
    rows = []
    groups = [("pair_accuracy", np.ones(len(chosen), dtype=bool))]
    if len(set(sources)) > 1:
        groups += [(f"pair_accuracy[{src}]", np.array([x == src for x in sources])) for src in sorted(set(sources))]
    for name, m in groups:
        acc = _pair_accuracy(sc[m], sr[m])
        length_acc = _pair_accuracy(lc[m], lr[m])
        random_acc = _pair_accuracy(coin[m], 1 - coin[m])
        rows.append(
            _row("pairwise", name, acc, length_acc, random_acc, n=int(m.sum()), flag=acc <= max(length_acc, random_acc))
        )
    return rows


def evaluate_reward_model(
    model: RewardModel,
    *,
    eval_prompts: pl.DataFrame | None = None,
    eval_pairs: pl.DataFrame | None = None,
    train_prompts: pl.DataFrame | None = None,
    out_dir: str | Path | None = None,
    config: RewardEvalConfig | None = None,
    cross_validate: Callable[[pl.DataFrame], RewardModel] | None = None,
    label: str = "continued",
) -> pl.DataFrame:
    """The validation report of one model as an `EVAL_METRICS` frame (see the module docstring).

    The artifact probe modifies a seeded sample of the held-out served responses (or, without
    prompts, of the held-out chosen responses). With `cross_validate` (a function fitting a model on
    pairs), the pair metrics come from `config.cv_folds`-fold cross-validation over `eval_pairs`
    (each pair scored by a model that never saw it), and their detail says so. `label` is the boolean column
    of `eval_prompts` (and `train_prompts`) a pointwise model learnt.
    """
    config = config or RewardEvalConfig()
    if eval_prompts is None and eval_pairs is None:
        raise ValueError("evaluate_reward_model needs eval_prompts, eval_pairs or both")
    rows: list[dict] = []
    if eval_prompts is not None:
        rows += pointwise_metrics(model, eval_prompts, config, train_prompts, out_dir, label)
    if eval_pairs is not None:
        scores = None
        if cross_validate is not None:
            scores = cross_validated_scores(cross_validate, eval_pairs, config.cv_folds)
        pair_rows = pairwise_metrics(model, eval_pairs, config, scores)
        if scores is not None:
            pair_rows = [dict(r, detail=f"{config.cv_folds}-fold cross-validation") for r in pair_rows]
        rows += pair_rows
    contexts, responses = [], []
    if eval_prompts is not None:
        usable = eval_prompts.filter(pl.col("served_response").is_not_null())
        contexts, responses = prompt_contexts(usable), usable["served_response"].to_list()
    if not responses and eval_pairs is not None:
        contexts, responses, _, _ = pairs_to_lists(eval_pairs)
    probe = pl.DataFrame(schema=EVAL_METRICS)
    if responses:
        order = np.random.default_rng(config.seed).permutation(len(responses))[: config.probe_size]
        probe = artifact_probe(model, [contexts[i] for i in order], [responses[i] for i in order], config)
        flagged = int(probe["flag"].sum())
        rows.append(
            _row(
                "summary",
                "pays_for_artifacts",
                flagged,
                n=probe.height,
                flag=flagged > 0,
                detail=", ".join(probe.filter(pl.col("flag"))["metric"].to_list()) or None,
            )
        )
    head = pl.DataFrame(rows, schema=EVAL_METRICS)
    return pl.concat([head.filter(pl.col("section") != "summary"), probe, head.filter(pl.col("section") == "summary")])
