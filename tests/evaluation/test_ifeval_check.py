"""The command line that scores checkpoints on the held-out half of IFEval."""

import json

import pytest

from evaluation.ifeval_check import IFEvalCheckRun, main


def _inputs(path, n=8):
    rows = [
        {
            "key": k,
            "prompt": f"Describe morning {k} in lowercase letters only.",
            "instruction_id_list": ["change_case:english_lowercase"],
            "kwargs": [{}],
        }
        for k in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_scores_a_policy_against_its_parent_on_the_held_out_half(tmp_path, capsys):
    import polars as pl

    from tests.training.tiny_policy import tiny_policy_dir

    policy = tiny_policy_dir()
    inputs = _inputs(tmp_path / "input_data.jsonl")
    args = ["--ifeval_path", str(inputs), "--policy", policy, "--parent", policy, "--ifeval_max_new_tokens", "4"]
    args += ["--cpu_threads", "1", "--bootstrap_resamples", "50", "--min_ifeval_prompts", "2"]
    assert main([*args, "--output_dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "instruction_strict" in out and "ifeval_regression: ok" in out
    rows = pl.read_parquet(tmp_path / "out" / "ifeval_rows.parquet")
    # only held-out prompts, answered alike by the same weights (greedy)
    assert 0 < rows.height < 8 and rows["response_new"].to_list() == rows["response_parent"].to_list()
    assert pl.read_parquet(tmp_path / "out" / "ifeval_difference.parquet")["difference"].to_list() == [0.0, 0.0]
    # kept replies: the new policy's are sampled and kept, and its parent, the same weights, reads them back; a
    # second run reads both back
    kept = ["--reply_cache_dir", str(tmp_path / "kept")]
    assert main([*args, *kept]) == 0
    first = capsys.readouterr().out
    assert "new: read back" not in first and "parent: read back" in first
    assert main([*args, *kept, "--output_dir", str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.count("read back") == 2
    again = pl.read_parquet(tmp_path / "again" / "ifeval_rows.parquet")
    assert again["response_new"].to_list() == rows["response_new"].to_list()


def test_bad_command_lines_fail_fast(tmp_path):
    with pytest.raises(ValueError, match="--policy"):
        IFEvalCheckRun(ifeval_path=str(_inputs(tmp_path / "in.jsonl")))
    with pytest.raises(ValueError, match="not a file"):
        IFEvalCheckRun(ifeval_path=str(tmp_path / "missing.jsonl"), policy="p")
