from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.training.rewards.reward_eval_frames import labelled_prompts, prompt_pairs
from training.rewards.artifacts import ARTIFACTS
from training.rewards.reward_eval import (
    EVAL_METRICS,
    RewardEvalConfig,
    artifact_probe,
    cross_validated_scores,
    evaluate_reward_model,
    expected_calibration_error,
)
from training.rewards.reward_model import RewardModel
from training.rewards.reward_splits import pair_folds, split_by_day

EMOJI = re.compile("[\U0001f300-\U0001faff\u2728]")


class FakeModel:
    """A scorer driven by a plain function of (context, response)."""

    def __init__(self, fn, kind: str = "pairwise"):
        self.fn = fn
        self.metadata = {"kind": kind, "backbone": "fake"}

    def score(self, contexts, responses):
        return np.array([self.fn(c, r) for c, r in zip(contexts, responses)], dtype=np.float64)

    def save(self, directory):
        return Path(directory)

    @classmethod
    def load(cls, directory, **kwargs):
        raise NotImplementedError


def emoji_lover(ctx, resp):
    return float(len(EMOJI.findall(resp)))


def neutral(ctx, resp):
    # depends on the context only: no change to a response can move it
    return float(sum(map(ord, ctx[-1]["content"])) % 13)


def test_fake_models_follow_the_protocol():
    assert isinstance(FakeModel(neutral), RewardModel)


def test_probe_flags_an_emoji_lover_and_not_a_neutral_scorer():
    prompts = labelled_prompts()
    ctx = [[dict(m) for m in h] for h in prompts["history"].to_list()]
    resp = prompts["served_response"].to_list()
    cfg = RewardEvalConfig(artifact_tolerance=0.1)
    loving = artifact_probe(FakeModel(emoji_lover), ctx, resp, cfg)
    assert loving.schema == EVAL_METRICS
    assert loving["metric"].to_list() == list(ARTIFACTS)
    assert dict(zip(loving["metric"], loving["flag"])) == {
        "emoji": True,
        "exclamation": False,
        "markdown_list": False,
        "padding_ai": False,
        "padding_repeat": False,
    }
    calm = artifact_probe(FakeModel(neutral), ctx, resp, cfg)
    assert not calm["flag"].any() and (calm["value"] == 0).all()
    # a scorer that pays for length is caught by the padding probes
    long = artifact_probe(FakeModel(lambda c, r: float(len(r))), ctx, resp, cfg)
    flags = dict(zip(long["metric"], long["flag"]))
    assert flags["padding_ai"] and flags["padding_repeat"]


def test_expected_calibration_error():
    y = np.array([0, 1] * 50)
    assert expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(np.zeros(10), np.ones(10)) == pytest.approx(1.0)
    assert expected_calibration_error(y, np.where(y == 1, 0.9, 0.1)) == pytest.approx(0.1)


def test_evaluate_pointwise_and_pairwise(tmp_path):
    prompts = labelled_prompts()
    train, held = split_by_day(prompts, eval_days=1)
    assert train["day"].max() < held["day"].min() and train.height + held.height == prompts.height

    def oracle(ctx, resp):
        return 0.95 if resp.endswith("?") else 0.05

    report = evaluate_reward_model(
        FakeModel(oracle, kind="pointwise"),
        eval_prompts=held,
        eval_pairs=prompt_pairs(held),
        train_prompts=train,
        out_dir=tmp_path,
    )
    assert report.schema == EVAL_METRICS
    m = {(r["section"], r["metric"]): r for r in report.to_dicts()}
    auc = m[("pointwise", "auc")]
    assert auc["value"] == 1.0 and auc["flag"] is False
    assert 0.0 <= auc["random_baseline"] <= 1.0 and auc["length_baseline"] is not None
    assert m[("pointwise", "accuracy")]["value"] == 1.0
    assert m[("pointwise", "ece")]["value"] == pytest.approx(0.05) and m[("pointwise", "ece")]["flag"] is False
    assert m[("pairwise", "pair_accuracy")]["value"] == 1.0
    assert {"pair_accuracy[annotation]", "pair_accuracy[engagement]"} <= {k[1] for k in m}
    plot = Path(m[("plot", "reliability")]["detail"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert m[("summary", "pays_for_artifacts")]["flag"] is False

    # the inverted oracle is worse than the baselines, and a BT utility gets no calibration rows
    bad = evaluate_reward_model(FakeModel(lambda c, r: -oracle(c, r)), eval_prompts=held, eval_pairs=prompt_pairs(held))
    rows = {(r["section"], r["metric"]): r for r in bad.to_dicts()}
    assert rows[("pointwise", "auc")]["flag"] is True
    assert rows[("pairwise", "pair_accuracy")]["flag"] is True
    assert ("pointwise", "ece") not in rows and ("plot", "reliability") not in rows

    lover = evaluate_reward_model(FakeModel(emoji_lover), eval_pairs=prompt_pairs(held))
    summary = lover.filter(pl.col("section") == "summary").row(0, named=True)
    assert summary["flag"] is True and summary["value"] == 1 and summary["detail"] == "emoji"


def _memorizer(train: pl.DataFrame) -> FakeModel:
    """A 'model' that knows only its training pairs: +1 for a reply it saw chosen, -1 for one it saw rejected."""
    seen = {r: 1.0 for r in train["chosen"]} | {r: -1.0 for r in train["rejected"]}
    return FakeModel(lambda ctx, resp: seen.get(resp, 0.0))


def test_cross_validation_scores_each_pair_with_a_model_that_never_saw_it():
    pairs = prompt_pairs(labelled_prompts(60)).with_columns(
        pl.format("chosen {}", pl.int_range(pl.len())).alias("chosen"),
        pl.format("rejected {}", pl.int_range(pl.len())).alias("rejected"),
    )
    folds = pair_folds(pairs, 5)
    assert set(folds) <= set(range(5)) and len(set(folds)) > 1
    by_prompt: dict[str, set] = {}
    for prompt, fold in zip(pairs["prompt"].to_list(), folds):
        by_prompt.setdefault(str(prompt), set()).add(int(fold))
    assert all(len(f) == 1 for f in by_prompt.values())  # a prompt's pairs share a fold

    chosen, rejected = cross_validated_scores(_memorizer, pairs, 5)
    assert (chosen == 0).all() and (rejected == 0).all()  # out of fold, a memorizer knows nothing
    in_sample = evaluate_reward_model(_memorizer(pairs), eval_pairs=pairs)
    crossed = evaluate_reward_model(_memorizer(pairs), eval_pairs=pairs, cross_validate=_memorizer)
    row = lambda f: f.filter(pl.col("metric") == "pair_accuracy").row(0, named=True)  # noqa: E731
    assert row(in_sample)["value"] == 1.0 and row(in_sample)["detail"] is None
    assert row(crossed)["value"] == 0.5 and row(crossed)["detail"] == "5-fold cross-validation"
    assert row(crossed)["n"] == pairs.height and row(crossed)["flag"] is True


def test_config_and_inputs_are_validated():
    with pytest.raises(ValueError, match="cv_folds"):
        RewardEvalConfig(cv_folds=1)
    with pytest.raises(ValueError, match="min_eval_pairs"):
        RewardEvalConfig(min_eval_pairs=-1)
    with pytest.raises(ValueError, match="n_bins"):
        RewardEvalConfig(n_bins=1)
    with pytest.raises(ValueError, match="eval_prompts"):
        evaluate_reward_model(FakeModel(neutral))
    with pytest.raises(ValueError, match="eval_days"):
        split_by_day(labelled_prompts(8), eval_days=4)


def test_empty_inputs_give_an_empty_report():
    prompts = labelled_prompts(4).clear()
    out = evaluate_reward_model(FakeModel(neutral, kind="pointwise"), eval_prompts=prompts)
    assert out.schema == EVAL_METRICS and out.height == 0
