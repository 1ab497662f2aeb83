from __future__ import annotations

import json
import random

import polars as pl
import pytest

from evaluation.ifeval import PAPER_SEED, IFEvalConfig, main, score_ifeval, score_ifeval_files
from evaluation.ifeval_files import read_inputs, read_responses
from pipeline import schema

PAPER_GPT4 = {  # Zhou et al. 2023, "Instruction-Following Evaluation for Large Language Models", Table 3
    "prompt_strict_acc": 76.89,
    "instruction_strict_acc": 83.57,
    "prompt_loose_acc": 79.30,
    "instruction_loose_acc": 85.37,
}


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return str(tmp_path / "nltk_data")


def test_reproduces_published_gpt4_figures(shared_data, offline):
    inputs = shared_data / "ifeval_input_data.jsonl"
    responses = shared_data / "ifeval_gpt4_responses_20231107.jsonl.gz"
    paper = score_ifeval_files(inputs, responses, IFEvalConfig(seed=PAPER_SEED, nltk_data_dir=offline))
    summary = paper.summary.row(0, named=True)
    assert (summary["n_prompts"], summary["n_instructions"]) == (541, 834)
    # one prompt's text was edited after the responses were generated: aligned by position
    assert summary["n_matched_by_position"] == 1
    assert paper.drops.height == 0
    assert {k: round(100 * v, 2) for k, v in paper.accuracies().items()} == PAPER_GPT4

    # the seed only moves the two prompts whose letter argument is invalid ("#", "!")
    other = score_ifeval_files(inputs, responses, IFEvalConfig(seed=0, nltk_data_dir=offline))
    joined = paper.rows.join(other.rows, on="key", suffix="_other")
    differ = joined.filter(
        (pl.col("follow_strict") != pl.col("follow_strict_other"))
        | (pl.col("follow_loose") != pl.col("follow_loose_other"))
    )
    assert set(differ["key"].to_list()) <= {1122, 1129}
    by_cat = paper.by_instruction.filter(pl.col("level") == "category")
    assert by_cat["n"].sum() == 834 and set(by_cat["name"]) >= {"keywords", "punctuation", "change_case"}


def _inputs(rows):
    return pl.DataFrame(
        [{"key": k, "prompt": p, "instruction_id_list": ids, "kwargs": json.dumps(kw)} for k, p, ids, kw in rows],
        schema={"key": pl.Int64, "prompt": pl.Utf8, "instruction_id_list": pl.List(pl.Utf8), "kwargs": pl.Utf8},
    )


def _responses(pairs):
    return pl.DataFrame(
        [{"prompt": p, "response": r} for p, r in pairs], schema={"prompt": pl.Utf8, "response": pl.Utf8}
    )


def test_strict_loose_and_drops_on_small_cases(offline):
    inputs = _inputs(
        [
            (1, "no commas please", ["punctuation:no_comma"], [{}]),
            (2, "give a title", ["detectable_format:title"], [{}]),
            (3, "lowercase english", ["change_case:english_lowercase"], [{}]),
            (4, "unknown", ["foo:bar"], [{}]),
            (5, "nobody answered", ["punctuation:no_comma"], [{}]),
            (
                6,
                "few sentences",
                ["length_constraints:number_sentences"],
                [{"num_sentences": 3, "relation": "less than"}],
            ),
            (
                7,
                "shout",
                ["change_case:capital_word_frequency"],
                [{"capital_frequency": 3, "capital_relation": "at least"}],
            ),
        ]
    )
    responses = _responses(
        [
            ("no commas please", "Sure, here it is\nNo commas here at all"),
            ("give a title", "<<A Title>>\nbody"),
            ("lowercase english", ""),
            ("unknown", "whatever"),
            ("few sentences", "Dr. Smith arrived at noon. He left at ten p.m. on Friday."),
            ("shout", "THE END is NEAR, my FRIEND's"),
        ]
    )
    res = score_ifeval(inputs, responses, IFEvalConfig(join="prompt", nltk_data_dir=offline))
    got = {r["key"]: (r["follow_strict"], r["follow_loose"]) for r in res.rows.iter_rows(named=True)}
    assert got == {
        1: ([False], [True]),  # only the first line has a comma: loose drops it
        2: ([True], [True]),
        3: ([False], [False]),  # an empty response follows nothing
        6: ([True], [True]),  # Punkt knows "Dr." and "p.m." do not end sentences: 2 < 3
        7: ([True], [True]),  # word_tokenize: THE, END, NEAR, FRIEND
    }
    reasons = dict(zip(res.drops["row_id"], res.drops["reason_code"]))
    assert reasons == {"4": "unknown_instruction", "5": "missing_response"}
    assert res.drops.schema == schema.DROPS
    acc = res.accuracies()
    assert acc["prompt_strict_acc"] == pytest.approx(3 / 5) and acc["prompt_loose_acc"] == pytest.approx(4 / 5)


def test_joins(offline):
    inputs = _inputs(
        [(1, "edited prompt", ["detectable_format:title"], [{}]), (2, "same prompt", ["detectable_format:title"], [{}])]
    )
    responses = _responses([("original prompt", "<<t>>"), ("same prompt", "no title")])
    fallback = score_ifeval(inputs, responses, IFEvalConfig(nltk_data_dir=offline))
    assert dict(zip(fallback.rows["key"], fallback.rows["matched_by"])) == {1: "position", 2: "prompt"}
    strict = score_ifeval(inputs, responses, IFEvalConfig(join="prompt", nltk_data_dir=offline))
    assert strict.rows["key"].to_list() == [2] and strict.drops["reason_code"].to_list() == ["missing_response"]


def test_seeded_draws_are_reproducible_and_leave_global_random_alone(offline):
    inputs = _inputs(
        [
            (
                k,
                f"p{k}",
                ["keywords:letter_frequency"],
                [{"letter": "#", "let_frequency": 3, "let_relation": "at least"}],
            )
            for k in range(40)
        ]
    )
    responses = _responses([(f"p{k}", "the quick brown fox jumps over the lazy dog " * 2) for k in range(40)])
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    a = score_ifeval(inputs, responses, IFEvalConfig(seed=5, nltk_data_dir=offline))
    assert random.random() == expected_next  # the global random state was restored
    b = score_ifeval(inputs, responses, IFEvalConfig(seed=5, nltk_data_dir=offline))
    assert a.rows["follow_strict"].to_list() == b.rows["follow_strict"].to_list()
    # a random letter per prompt: some appear three times in the text, some do not
    assert 0 < a.summary["prompt_strict_acc"][0] < 1


def test_reading_files_quarantines_bad_lines(tmp_path, offline):
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "\n".join(
            [
                json.dumps(
                    {"key": 1, "prompt": "p", "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]}
                ),
                "{not json",
                json.dumps({"key": 2, "prompt": "q", "instruction_id_list": ["a", "b"], "kwargs": [{}]}),
            ]
        )
    )
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"prompt": "p", "response": "<<x>>"}) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    inputs, in_drops = read_inputs(inp)
    responses, out_drops = read_responses(out)
    assert inputs["key"].to_list() == [1] and in_drops["row_id"].to_list() == ["line:2", "line:3"]
    assert responses.height == 1 and out_drops["reason_code"].to_list() == ["bad_response_record"]
    res = score_ifeval_files(inp, out, IFEvalConfig(nltk_data_dir=offline))
    assert res.rows["prompt_strict"].to_list() == [True] and res.drops.height == 3


def test_the_command_line_scores_a_response_file(tmp_path, offline, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    prompt = {"key": 1, "prompt": "p", "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]}
    inp.write_text(json.dumps(prompt) + "\n" + json.dumps({**prompt, "key": 2, "prompt": "q"}) + "\n")
    out.write_text(json.dumps({"prompt": "p", "response": "<<x>>"}) + "\n")
    assert main([str(inp), str(out), "--nltk_data_dir", offline]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracies"]["prompt_strict_acc"] == 1.0
    assert printed["not_scored"] == {"missing_response": 1}


@pytest.mark.parametrize("kwargs, match", [({"join": "fuzzy"}, "join"), ({"seed": -1}, "seed")])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IFEvalConfig(**kwargs)
