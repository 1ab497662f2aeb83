"""The offline evaluation's pieces that need no model, and the command line on two tiny policies."""

import dataclasses

import polars as pl
import pytest

from evaluation.ab_test import ab_decision
from evaluation.offline_eval import select_eval_prompts
from evaluation.record import json_document
from pipeline import schema
from tests.evaluation.eval_pool import eval_pool

DAYS = ["2026-01-04", "2026-01-05"]


def _lifts(rows: list[tuple[str, float, float, float | None, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"metric": m, "delta_ci_low": lo, "delta_ci_high": hi, "boot_ci_low": blo, "boot_ci_high": bhi}
            for m, lo, hi, blo, bhi in rows
        ]
    )


def test_ab_decision_rules():
    ok = pl.DataFrame({"srm": [False], "p_value": [0.4]})
    assert (
        ab_decision(_lifts([("breadth", 0.01, 0.05, 0.012, 0.05), ("depth", -0.01, 0.02, -0.01, 0.02)]), ok)[0]
        == "ship"
    )
    # the bootstrap interval must agree with the delta-method one
    assert ab_decision(_lifts([("breadth", 0.01, 0.05, -0.001, 0.05)]), ok)[0] == "inconclusive"
    assert (
        ab_decision(_lifts([("breadth", 0.01, 0.05, None, None), ("depth", -0.05, -0.01, None, None)]), ok)[0]
        == "no-ship"
    )
    assert ab_decision(_lifts([("breadth", None, None, None, None)]), ok)[0] == "inconclusive"
    bad = pl.DataFrame({"srm": [True], "p_value": [1e-9]})
    assert ab_decision(_lifts([("breadth", 0.01, 0.05, 0.01, 0.05)]), bad)[0] == "invalid"
    # a simulated readout's replayed-prompt interval must agree too: many simulated users cannot stand in for
    # more replayed prompts
    worse = _lifts([("breadth", -0.03, -0.01, -0.03, -0.01)])
    assert ab_decision(worse, ok)[0] == "no-ship"
    on_few_prompts = worse.with_columns(prompt_ci_low=pl.lit(-0.08), prompt_ci_high=pl.lit(0.04))
    assert ab_decision(on_few_prompts, ok)[0] == "inconclusive"
    clear = worse.with_columns(prompt_ci_low=pl.lit(-0.05), prompt_ci_high=pl.lit(-0.005))
    assert ab_decision(clear, ok)[0] == "no-ship"


def test_json_documents_hold_no_nan():
    assert json_document({"b": [float("inf"), 1.0], "a": float("nan")}) == '{"a": null, "b": [null, 1.0]}'


def test_eval_prompts_are_capped_per_slice_and_stable():
    pool = pl.concat([eval_pool(d) for d in DAYS])
    broken = pool.head(1).with_columns(
        prompt_id=pl.lit("broken"),
        split=pl.lit("eval_user"),
        history=pl.lit(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], dtype=pl.List(schema.MESSAGE)
        ),
    )
    chosen, drops = select_eval_prompts(pl.concat([pool, broken]), per_slice=5, seed=0)
    assert chosen.group_by("split").len().sort("split")["len"].to_list() == [5, 5]
    assert "train" not in set(chosen["split"])
    assert drops["row_id"].to_list() == ["broken"] and drops["reason_code"].to_list() == ["not_ending_in_user"]
    again, _ = select_eval_prompts(pool.reverse(), per_slice=5, seed=0)
    assert again["prompt_id"].to_list() == chosen["prompt_id"].to_list()
    other, _ = select_eval_prompts(pool, per_slice=5, seed=1)
    assert other["prompt_id"].to_list() != chosen["prompt_id"].to_list()


def test_eval_prompts_spread_over_every_user_before_anyone_gets_a_second():
    # one heavy user holds 90 of a slice's 100 prompts; ten light users hold one each
    rows = [("heavy", f"h{k}") for k in range(90)] + [(f"light{k}", f"l{k}") for k in range(10)]
    pool = eval_pool(DAYS[0]).head(1)
    pool = pl.concat(
        [pool.with_columns(user_hash=pl.lit(u), prompt_id=pl.lit(p), split=pl.lit("eval_user")) for u, p in rows]
    )
    chosen, _ = select_eval_prompts(pool, per_slice=20, seed=0)
    assert chosen.height == 20 and chosen["user_hash"].n_unique() == 11  # every user, then the heavy one's rest
    assert chosen.filter(pl.col("user_hash") == "heavy").height == 10
    by_prompt = pool.sample(20, seed=0)  # what a prompt-level draw of the same size would typically hold
    assert by_prompt["user_hash"].n_unique() < 11
    assert select_eval_prompts(pool.reverse(), per_slice=20, seed=0)[0]["prompt_id"].to_list() == (
        chosen["prompt_id"].to_list()
    )


def test_evaluate_two_policies_gates_and_tables(tmp_path):
    from evaluation.offline_eval import GATES, OfflineEvalConfig, evaluate
    from tests.evaluation.eval_pool import fit_reward_models, hashing_embed
    from tests.training.tiny_policy import tiny_policy_dir
    from training.rewards.reward_model import load_reward_model

    pool = pl.concat([eval_pool(d) for d in DAYS])
    fit_reward_models(pool, tmp_path / "pointwise", tmp_path / "pairwise")
    judges = tuple(load_reward_model(tmp_path / k, embed_fn=hashing_embed) for k in ("pointwise", "pairwise"))
    config = OfflineEvalConfig(
        eval_prompts=3, max_new_tokens=6, steerability_samples=1, bootstrap_resamples=200, cpu_threads=1
    )
    policy = tiny_policy_dir()
    training = pool.filter(pl.col("split") == "train").select("prompt_id", "text")
    result = evaluate(
        "b", {"new": policy, "parent": policy}, {"new": "b", "parent": "a"}, pool, judges, training, config
    )
    assert set(result.gates) == set(GATES) - {"ifeval_regression"}  # no IFEval prompts configured
    # the same weights and seed answer identically: every pair ties, so the win rate is one half
    wr = result.evaluation.wr.summary
    assert wr["win_rate"].to_list() == [0.5] * wr.height
    assert result.gates["train_eval_disjoint"].passed
    tables = result.tables()
    assert set(tables["eval_responses"]["policy"]) == {"a", "b"}
    # each reply's token count, and whether it ended before the 6-token limit
    responses = tables["eval_responses"]
    assert responses["n_tokens"].is_between(1, 6).all() and responses["n_tokens"].null_count() == 0
    assert (responses["ended"] == (responses["n_tokens"] < 6)).all()
    style = result.evaluation.style.row(0, named=True)
    assert style["cut_off_rate"] == pytest.approx(1 - style["n_ended"] / style["n"])
    assert tables["release_gates"]["gate"].to_list() == list(result.gates)
    # a few replies of both policies side by side: card prompts with the card's rules, pool prompts with the style's
    samples = tables["eval_samples"]
    assert samples.filter(pl.col("kind") == "card").height == 3 and samples.filter(pl.col("kind") == "pool").height == 3
    card = samples.filter(pl.col("kind") == "card").row(0, named=True)
    assert card["new"] == card["parent"] and card["prompt"] and card["new_kept"] + card["new_broke"]
    pool_row = samples.filter(pl.col("kind") == "pool").row(0, named=True)
    assert set(pool_row["new_kept"] + pool_row["new_broke"]) == {"no_list", "no_emoji", "no_stock_phrase", "no_refusal"}
    assert pool_row["new_score"] == pool_row["parent_score"]  # the same reply scores alike
    # the win-rate summary names its evidence: users, conversations and the unit it resampled
    assert {"users", "conversations", "unit"} <= set(wr.columns)
    # no training prompts known: the disjoint gate is not run rather than passed
    again = evaluate("b", {"new": policy, "parent": policy}, {"new": "b", "parent": "a"}, pool, judges, None, config)
    assert "train_eval_disjoint" not in again.gates
    # a policy answers the character cards alike in every evaluation, whatever the window's prompts
    fewer = dataclasses.replace(config, eval_prompts=1)
    other = evaluate("c", {"new": policy, "parent": policy}, {"new": "c", "parent": "b"}, pool, judges, None, fewer)
    assert other.evaluation.evals.height != result.evaluation.evals.height
    assert other.evaluation.steer_replies["new"] == result.evaluation.steer_replies["new"]


def test_the_held_out_ifeval_half_is_answered_gated_and_kept_out_of_training(tmp_path):
    import json

    from evaluation.ifeval_files import read_inputs
    from evaluation.ifeval_heldout import ID_PREFIX, heldout_ifeval
    from evaluation.offline_eval import OfflineEvalConfig, evaluate
    from tests.evaluation.eval_pool import fit_reward_models, hashing_embed
    from tests.training.tiny_policy import tiny_policy_dir
    from training.rewards.reward_model import load_reward_model

    path = tmp_path / "input_data.jsonl"
    lines = [
        {
            "key": k,
            "prompt": f"Tell me about day {k} in lowercase letters only.",
            "instruction_id_list": ["change_case:english_lowercase"],
            "kwargs": [{}],
        }
        for k in range(12)
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    pool = pl.concat([eval_pool(d) for d in DAYS])
    fit_reward_models(pool, tmp_path / "pointwise", tmp_path / "pairwise")
    judges = tuple(load_reward_model(tmp_path / k, embed_fn=hashing_embed) for k in ("pointwise", "pairwise"))
    config = OfflineEvalConfig(
        eval_prompts=2,
        max_new_tokens=4,
        steerability_samples=1,
        test_cards=False,
        measure_fluency=False,
        bootstrap_resamples=100,
        cpu_threads=1,
        ifeval_path=str(path),
        ifeval_max_prompts=4,
        ifeval_max_new_tokens=5,
        min_ifeval_prompts=3,
    )
    held = heldout_ifeval(read_inputs(path)[0], 4)
    policy = tiny_policy_dir()
    training = pool.filter(pl.col("split") == "train").select("prompt_id", "text")
    result = evaluate(
        "b", {"new": policy, "parent": policy}, {"new": "b", "parent": "a"}, pool, judges, training, config
    )
    tables = result.tables()
    # both policies answered the held-out half (the capped sample of it), greedily: the same weights answer alike
    assert set(tables["eval_ifeval"]["role"]) == {"new", "parent"}
    assert tables["eval_ifeval"]["n_prompts"].to_list() == [held.height] * 2
    records = tables["eval_records"].filter(pl.col("slice") == "ifeval")
    assert set(records["prompt_id"]) == {str(k) for k in held["key"]}
    assert set(records["metric"]) == {"ifeval/prompt_strict", "ifeval/instruction_strict"}
    assert tables["eval_ifeval_difference"]["difference"].to_list() == [0.0, 0.0]
    assert result.gates["ifeval_regression"].severity == "ok"
    assert "bad_input_record" in result.drops["reason_code"].to_list()  # the unreadable line, counted
    # a held-out IFEval prompt among the training prompts fails the disjoint gate
    from evaluation.ifeval_heldout import eval_prompt_texts

    leaked = pl.concat([training, pl.DataFrame({"prompt_id": ["t-leak"], "text": [held["prompt"][0]]})])
    gates = result.evaluation.gates(
        leaked, config.gate_config(), None, result.ifeval_differences, eval_prompt_texts(held)
    )
    gate = gates["train_eval_disjoint"]
    assert gate.severity == "error" and gate.metadata["examples"] == [f"{ID_PREFIX}{held['key'][0]}"]
    # kept greedy replies: the parent (the same weights) reads back what the new policy wrote, with equal scores
    kept = dataclasses.replace(config, reply_cache_dir=str(tmp_path / "kept"))
    read = evaluate("b", {"new": policy, "parent": policy}, {"new": "b", "parent": "a"}, pool, judges, None, kept)
    assert read.tokens_per_s["parent_ifeval"] == "read back" and read.tokens_per_s["new_ifeval"] != "read back"
    assert read.ifeval.drop("policy").equals(tables["eval_ifeval"].drop("policy"))


def test_command_line_lists_every_setting():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "evaluation.offline_eval", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--new_policy", "--parent_policy", "--prompts", "--pointwise", "--pairwise", "--win_rate_error"):
        assert flag in out
    assert "A slice win rate above this fails the release." in out  # the gate's own help text


def test_offline_eval_config_fails_fast_on_bad_settings():
    import pytest

    from evaluation.offline_eval import OfflineEvalConfig

    with pytest.raises(ValueError, match="steerability_samples"):
        OfflineEvalConfig(steerability_samples=0)
    with pytest.raises(ValueError, match="win_rate_warn"):
        OfflineEvalConfig(win_rate_warn=0.7, win_rate_error=0.65)
    with pytest.raises(ValueError, match="ifeval_path=.*not a file"):
        OfflineEvalConfig(ifeval_path="no/such/input_data.jsonl")
    with pytest.raises(ValueError, match="ifeval_heldout_fraction"):
        OfflineEvalConfig(ifeval_heldout_fraction=1.5)
    with pytest.raises(ValueError, match="ifeval_margin"):
        OfflineEvalConfig(ifeval_margin=-0.1)
