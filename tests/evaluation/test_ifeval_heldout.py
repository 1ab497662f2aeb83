"""The held-out half of IFEval: a split that depends on each prompt alone, paired differences, and the IFEval gate."""

import json

import polars as pl
import pytest

from evaluation.gate_config import GateConfig
from evaluation.generation_report import build_markdown
from evaluation.ifeval_heldout import (
    HELDOUT,
    OPEN,
    IFEvalSplitConfig,
    eval_prompt_texts,
    heldout_ifeval,
    paired_differences,
    split_ifeval,
)
from evaluation.record import collect_metrics
from evaluation.release_gates import ifeval_regression, train_eval_disjoint


def _inputs(n: int, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": [offset + i for i in range(n)],
            "prompt": [f"Write a note about topic {i} without commas." for i in range(n)],
            "instruction_id_list": [["punctuation:no_comma"]] * n,
            "kwargs": ["[{}]"] * n,
        },
        schema={"key": pl.Int64, "prompt": pl.Utf8, "instruction_id_list": pl.List(pl.Utf8), "kwargs": pl.Utf8},
    )


def test_a_prompt_keeps_its_half_whatever_its_key_order_or_neighbours():
    inputs = _inputs(400)
    split = split_ifeval(inputs)
    held = split.filter(pl.col("split") == HELDOUT)
    assert set(split["split"]) == {HELDOUT, OPEN}
    assert 160 < held.height < 240  # about half
    # re-keyed, reversed, with new prompts beside them and case and spacing changed: the same prompts held out
    other = pl.concat([_inputs(400, offset=1000).reverse(), _inputs(50, offset=5000).with_columns(prompt=pl.lit("x"))])
    other = other.with_columns(pl.col("prompt").str.to_uppercase().str.replace(" ", "   "))
    again = split_ifeval(other).filter(pl.col("split") == HELDOUT)
    assert set(held["prompt"].str.to_lowercase()) <= set(again["prompt"].str.to_lowercase().str.replace("   ", " "))
    # another salt is another split; a fraction of 1 holds every prompt out
    assert not split_ifeval(inputs, IFEvalSplitConfig(salt="other"))["split"].equals(split["split"])
    assert (split_ifeval(inputs, IFEvalSplitConfig(heldout_fraction=1.0))["split"] == HELDOUT).all()


def test_a_cap_samples_the_held_out_half_not_the_first_lines():
    inputs = _inputs(400)
    held = split_ifeval(inputs).filter(pl.col("split") == HELDOUT)
    capped = heldout_ifeval(inputs, 20)
    assert capped.height == 20 and capped["key"].is_sorted()
    assert set(capped["key"]) <= set(held["key"])
    assert set(capped["key"]) == set(held.sort("draw").head(20)["key"])
    assert capped["key"].max() > held["key"].sort()[19]  # not the file's first held-out lines
    texts = eval_prompt_texts(capped)
    assert texts.columns == ["prompt_id", "text"] and texts["prompt_id"].str.starts_with("ifeval:").all()


@pytest.mark.parametrize(("kwargs", "match"), [({"heldout_fraction": 0.0}, "heldout_fraction"), ({"salt": ""}, "salt")])
def test_bad_split_settings_fail_fast(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IFEvalSplitConfig(**kwargs)


def _rows(keys, follows) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": keys,
            "follow_strict": follows,
            "prompt_strict": [all(f) for f in follows],
        },
        schema={"key": pl.Int64, "follow_strict": pl.List(pl.Boolean), "prompt_strict": pl.Boolean},
    )


def test_paired_differences_count_instructions_and_prompts():
    keys = list(range(40))
    parent = _rows(keys, [[True, False]] * 20 + [[False]] * 20)  # 20 of 60 instructions, no prompt
    new = _rows(keys, [[True, True]] * 20 + [[False]] * 20)  # 40 of 60 instructions, 20 of 40 prompts
    d = {r["metric"]: r for r in paired_differences(parent, new, n_resamples=500).iter_rows(named=True)}
    inst, prompt = d["instruction_strict"], d["prompt_strict"]
    assert (inst["parent"], inst["new"], inst["n_instructions"]) == (pytest.approx(20 / 60), pytest.approx(40 / 60), 60)
    assert inst["difference"] == pytest.approx(20 / 60) and prompt["difference"] == pytest.approx(0.5)
    assert 0 < inst["ci_low"] < inst["difference"] < inst["ci_high"]
    assert prompt["n_prompts"] == 40
    # the same prompts in another order give the same interval; no change gives a zero interval
    shuffled = paired_differences(parent.reverse(), new.sample(fraction=1.0, shuffle=True, seed=3), n_resamples=500)
    assert shuffled.equals(paired_differences(parent, new, n_resamples=500))
    same = paired_differences(parent, parent, n_resamples=200)
    assert same["difference"].to_list() == [0.0, 0.0] and same["ci_low"].to_list() == [0.0, 0.0]
    # no prompt in common: nothing to compare
    assert paired_differences(parent, _rows([99], [[True]])).is_empty()


def _differences(diff: float, lo: float, hi: float, n: int = 100) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "metric": m,
                "parent": 0.3,
                "new": 0.3 + diff,
                "difference": diff,
                "ci_low": lo,
                "ci_high": hi,
                "n_prompts": n,
                "n_instructions": 150,
            }
            for m in ("instruction_strict", "prompt_strict")
        ]
    )


def test_the_ifeval_gate_blocks_a_drop_the_evidence_decides():
    assert ifeval_regression(_differences(0.02, -0.01, 0.05)).severity == "ok"
    assert ifeval_regression(_differences(-0.03, -0.07, 0.01)).severity == "warn"
    blocked = ifeval_regression(_differences(-0.06, -0.10, -0.02))
    assert blocked.severity == "error" and "instruction_strict" in blocked.detail
    # a margin forgives a decided drop smaller than it
    assert ifeval_regression(_differences(-0.06, -0.10, -0.02), GateConfig(ifeval_margin=0.05)).severity == "warn"
    few = ifeval_regression(_differences(-0.5, -0.6, -0.4, n=10))
    assert few.severity == "insufficient" and few.metadata["evidence"]["paired_prompts"] == 10
    assert ifeval_regression(_differences(0, 0, 0).head(0)).severity == "insufficient"


def test_a_held_out_ifeval_prompt_in_training_fails_the_disjoint_gate():
    held = eval_prompt_texts(heldout_ifeval(_inputs(100), 30))
    train = pl.DataFrame({"prompt_id": ["t1", "t2"], "text": ["hello there", held["text"][0].upper() + "  "]})
    gate = train_eval_disjoint(train, held)
    assert gate.severity == "error" and gate.metadata["examples"] == [held["prompt_id"][0]]
    assert train_eval_disjoint(train.head(1), held).severity == "ok"


def test_the_generations_report_shows_ifeval_beside_the_cards():
    summary = pl.DataFrame(
        [
            {
                "role": "new",
                "policy": "gen-1",
                "n_prompts": 100,
                "instruction_strict_acc": 0.31,
                "prompt_strict_acc": 0.2,
            },
            {
                "role": "parent",
                "policy": "gen-0",
                "n_prompts": 100,
                "instruction_strict_acc": 0.25,
                "prompt_strict_acc": 0.1,
            },
        ]
    )
    metrics = collect_metrics({"eval_ifeval": summary, "eval_ifeval_difference": _differences(0.06, 0.01, 0.11)})
    assert metrics["ifeval"]["new"]["instruction_strict_acc"] == 0.31
    assert metrics["ifeval"]["difference"]["instruction_strict"]["ci_low"] == 0.01
    row = {"generation": "gen-1", "parent": "gen-0", "metrics": json.loads(json.dumps(metrics)), "gate": "passed"}
    markdown = build_markdown([row])
    assert "IFEval held-out" in markdown and "0.310 / 0.250 (+0.060 [+0.010, +0.110])" in markdown
    without = build_markdown([{**row, "metrics": {"version": 1}}])
    assert "0.310" not in without


def test_the_public_ifeval_prompts_split_in_halves(shared_data):
    from evaluation.ifeval_files import read_inputs

    inputs, drops = read_inputs(shared_data / "ifeval_input_data.jsonl")
    assert inputs.height == 541 and drops.height == 0
    split = split_ifeval(inputs)
    held = split.filter(pl.col("split") == HELDOUT)
    assert 240 < held.height < 300
    # the evaluation's sample is the same from the file in another order
    sample = heldout_ifeval(inputs, 100)
    assert sample.height == 100 and sample.equals(heldout_ifeval(inputs.reverse(), 100))
