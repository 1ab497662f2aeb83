import base64
import json
from datetime import date

import polars as pl
import pytest

from evaluation.generation_report import build_markdown, write_generation_report
from evaluation.generation_report_config import GenerationReportConfig
from evaluation.generations_table import GENERATIONS, metrics_long, parse_generations


def _metrics(wr_user: float, wr_internal: float, following: tuple[float, float], lift: float, simulated: bool) -> str:
    return json.dumps(
        {
            "version": 1,
            "win_rates": [
                {
                    "slice": "eval_user",
                    "judge": "pointwise",
                    "n": 64,
                    "win_rate": wr_user,
                    "ci_low": wr_user - 0.1,
                    "ci_high": wr_user + 0.1,
                },
                {
                    "slice": "eval_internal",
                    "judge": "pointwise",
                    "n": 40,
                    "win_rate": wr_internal,
                    "ci_low": wr_internal - 0.12,
                    "ci_high": wr_internal + 0.12,
                },
                {"slice": "eval_user", "judge": "pairwise", "n": 64, "win_rate": 0.52, "ci_low": 0.44, "ci_high": 0.6},
            ],
            "steerability": {
                "new": {"following_rate": following[0], "violation_rate": 0.3, "n": 50},
                "parent": {"following_rate": following[1], "violation_rate": 0.32, "n": 50},
            },
            "style": {
                role: {
                    "mean_chars": 80.0 + k,
                    "list_rate": 0.01,
                    "emoji_rate": 0.02,
                    "stock_phrase_rate": 0.0,
                    "refusal_rate": 0.0,
                    "false_refusal_rate": 0.0,
                    "n": 64,
                }
                for k, role in enumerate(("parent", "new"))
            },
            "reward_models": {"pointwise": {"auc": 0.61}, "pairwise": {"pair_accuracy": 0.58}},
            "ab": {
                "source": "simulate" if simulated else "lake",
                "simulated": simulated,
                "verdict": "ship",
                "lifts": {
                    "breadth": {"lift": lift, "delta_ci_low": lift - 0.02, "delta_ci_high": lift + 0.02},
                    "depth": {"lift": 0.01, "delta_ci_low": -0.02, "delta_ci_high": 0.04},
                },
            },
        }
    )


def _generations() -> pl.DataFrame:
    rows = []
    for n, (wr_user, wr_int, lift, simulated) in enumerate(
        [(0.55, 0.53, 0.05, True), (0.58, 0.52, 0.03, False)], start=1
    ):
        rows.append(
            {
                "generation": f"gen-{n}",
                "number": n,
                "parent": f"gen-{n - 1}",
                "created_at": f"2026-01-{n:02d}T06:00:00+00:00",
                "recorded_at": f"2026-01-{n:02d}T09:00:00+00:00",
                "window_start": date(2026, 1, n),
                "window_end": date(2026, 1, n + 6),
                "days": [f"2026-01-{d:02d}" for d in range(n, n + 7)],
                "inputs": json.dumps({"datasets": {"sft": f"{n}" * 64, "preference": "ab" * 32}}),
                "checkpoints": json.dumps({"policy": f"models/gen-{n}/grpo"}),
                "metrics": _metrics(wr_user, wr_int, (0.40 + 0.02 * n, 0.40), lift, simulated),
                "gate": "passed" if n == 1 else "passed_with_warnings",
                "gate_detail": json.dumps(
                    [
                        {
                            "gate": "win_rate_ceiling",
                            "severity": "ok" if n == 1 else "warn",
                            "detail": "within the ceiling",
                        }
                    ]
                ),
                "ab_verdict": "ship",
                "ab_source": "simulate" if simulated else "lake",
            }
        )
    # recorded out of order: the report sorts by number
    return pl.DataFrame(rows[::-1], schema=GENERATIONS)


def test_report_renders_two_generations_offline(tmp_path):
    files = write_generation_report(_generations(), tmp_path / "generations")
    html = files.index.read_text()
    assert files.generations == 2
    assert set(files.plots) == {"win_rates", "steerability", "style", "ab_lifts"}
    assert html.index("<strong>gen-1</strong>") < html.index("<strong>gen-2</strong>")
    assert "http://" not in html and "https://" not in html  # nothing fetched: CSS inline, charts embedded
    images = [chunk.split('"', 1)[0] for chunk in html.split('src="data:image/png;base64,')[1:]]
    assert len(images) == 4
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert "0.580 [0.480, 0.680]" in html  # gen-2's user win rate with its CI
    assert "+3.0% [+1.0%, +5.0%]" in html  # gen-2's breadth lift with its CI
    assert "Simulated A/B" in html  # gen-1's readout was simulated: the page says so
    assert '<td class="mono">111111111111</td>' in html  # dataset hashes cut to hash_chars in the table
    assert "1" * 64 in html  # and in full in the lineage inputs


def test_markdown_summary_and_long_metrics():
    rows = parse_generations(_generations())
    md = build_markdown(rows)
    assert md.splitlines()[0].startswith("**2 generations**, latest `gen-2`")
    gen1 = next(line for line in md.splitlines() if line.startswith("| gen-1 "))
    assert "ship (simulated)" in gen1 and "0.550 [0.450, 0.650]" in gen1 and "0.420 / 0.400" in gen1
    long = metrics_long(rows)
    wr = long.filter((pl.col("group") == "win_rate") & (pl.col("series") == "eval_internal/pointwise"))
    assert wr.sort("number")["value"].to_list() == [0.53, 0.52]
    assert long.filter(pl.col("group") == "ab_lift").height == 4
    assert long.filter(pl.col("series") == "mean_chars/new")["value"].to_list() == [81.0, 81.0]


def test_missing_and_corrupt_documents_do_not_break_the_page(tmp_path):
    frame = _generations().with_columns(
        pl.when(pl.col("number") == 2).then(pl.lit("{not json")).otherwise(pl.col("metrics")).alias("metrics")
    )
    frame = frame.with_columns(
        pl.when(pl.col("number") == 1).then(pl.lit("[1, 2]")).otherwise(pl.col("inputs")).alias("inputs"),
        pl.lit('{"a": 1}').alias("gate_detail"),
    )
    rows = parse_generations(frame)
    assert rows[1]["metrics"] == {} and rows[0]["inputs"] == {} and rows[0]["gate_detail"] == []
    files = write_generation_report(frame, tmp_path)
    assert "gen-2" in files.index.read_text()
    assert "| gen-2 | gen-1 | passed_with_warnings | ship | yes | — |" in files.markdown
    empty = write_generation_report(pl.DataFrame(schema=GENERATIONS), tmp_path / "empty")
    assert empty.generations == 0 and "No generation recorded yet" in empty.index.read_text()
    assert empty.markdown == "_no generation recorded yet_"


def test_config_is_validated():
    with pytest.raises(ValueError, match="win_rate_warn"):
        GenerationReportConfig(win_rate_warn=0.7, win_rate_ceiling=0.65)
    with pytest.raises(ValueError, match="hash_chars"):
        GenerationReportConfig(hash_chars=2)


def test_report_shows_each_verdict_with_its_evidence_and_replies_side_by_side(tmp_path):
    frame = _generations()
    metrics = json.loads(frame.filter(pl.col("number") == 2)["metrics"][0])
    metrics["win_rates"][0].update(users=9, conversations=30, unit="conversation")
    metrics["ab"]["evidence"] = {"users": 4, "turns": 88, "min_users": 50, "refits": 10, "conversations": 64}
    metrics["samples"] = [
        {
            "kind": "card",
            "prompt_id": "robin:name",
            "slice": "steerability",
            "character_id": "robin",
            "prompt": "What is your name?",
            "parent": "I am a mission?",
            "new": "Robin here. What is yours?",
            "parent_kept": ["no_emoji"],
            "parent_broke": ["sign_with_name", "end_with_question"],
            "new_kept": ["no_emoji", "end_with_question"],
            "new_broke": ["sign_with_name"],
            "parent_score": None,
            "new_score": None,
        },
        {
            "kind": "pool",
            "prompt_id": "p1",
            "slice": "eval_user",
            "character_id": None,
            "prompt": "I went hiking",
            "parent": "Oh yeah that is really good?",
            "new": "Nice, where did you go?",
            "parent_kept": ["no_list"],
            "parent_broke": [],
            "new_kept": ["no_list"],
            "new_broke": [],
            "parent_score": 0.41,
            "new_score": 0.63,
        },
    ]
    detail = [
        {
            "gate": "win_rate_ceiling",
            "severity": "insufficient",
            "outcome": "insufficient",
            "detail": "insufficient evidence: eval_user: 9 users (< 20)",
            "evidence": {
                "slices": {"eval_user": {"prompts": 64, "users": 9, "conversations": 30, "unit": "conversation"}}
            },
        },
        {"gate": "artifact_drift", "severity": "ok", "outcome": "pass", "detail": "within bands", "evidence": None},
    ]
    frame = frame.with_columns(
        pl.when(pl.col("number") == 2).then(pl.lit(json.dumps(metrics))).otherwise(pl.col("metrics")).alias("metrics"),
        pl.when(pl.col("number") == 2)
        .then(pl.lit(json.dumps(detail)))
        .otherwise(pl.col("gate_detail"))
        .alias("gate_detail"),
        pl.when(pl.col("number") == 2)
        .then(pl.lit(["win_rate_ceiling"], dtype=pl.List(pl.Utf8)))
        .otherwise(pl.lit([], dtype=pl.List(pl.Utf8)))
        .alias("insufficient"),
    )
    files = write_generation_report(frame, tmp_path, GenerationReportConfig(min_decided_gates=4))
    html = files.index.read_text()
    assert "at least 4 gates had the evidence to decide" in html  # the release rule, as configured
    # per gate: its outcome, with the evidence behind it
    verdicts = html[html.index('id="verdicts"') : html.index('id="replies"')]
    assert (
        'class="pill insufficient"' in verdicts
        and "eval_user: 64 prompts, 9 users, 30 conversations (CI by conversation)" in verdicts
    )
    assert "user simulator trained on 4 users and 88 turns (minimum 50 users)" in verdicts
    assert "9 users, 30 conversations, CI by conversation" in html  # next to the win rate in the overview
    # replies side by side, with the rules each kept or broke
    replies = html[html.index('id="replies"') : html.index('id="winrates"')]
    for text in (
        "I am a mission?",
        "Robin here. What is yours?",
        "Oh yeah that is really good?",
        "Nice, where did you go?",
    ):
        assert text in replies
    assert "broke sign_with_name, end_with_question" in replies and "kept no_emoji, end_with_question" in replies
    assert "judge 0.6300" in replies
    # gen-1 recorded none: said, not hidden
    assert "No sample replies recorded" in replies
    assert files.markdown.splitlines()[-3].endswith("| win_rate_ceiling |")


def test_report_shows_each_rule_of_the_steerability_gate_with_its_interval(tmp_path):
    rules = [
        {"rule": "case", "parent": 0.125, "new": 0.625, "rise": 0.5, "ci_low": 0.39, "ci_high": 0.61, "n_prompts": 40},
        {
            "rule": "no_emoji",
            "parent": 0.25,
            "new": 0.25,
            "rise": 0.0,
            "ci_low": -0.06,
            "ci_high": 0.06,
            "n_prompts": 40,
        },
    ]
    detail = [
        {
            "gate": "steerability_regression",
            "severity": "error",
            "outcome": "fail",
            "detail": "rules forgotten: case +0.500",
            "evidence": None,
            "rules": rules,
        }
    ]
    frame = _generations().with_columns(pl.lit(json.dumps(detail)).alias("gate_detail"))
    html = write_generation_report(frame, tmp_path).index.read_text()
    verdicts = html[html.index('id="verdicts"') : html.index('id="replies"')]
    assert "violation rate per rule" in verdicts
    assert '<td class="mono">case</td><td class="num">0.125</td><td class="num">0.625</td>' in verdicts
    assert "[+0.390, +0.610]" in verdicts and "[-0.060, +0.060]" in verdicts


def test_overview_says_whether_each_generation_was_built_upon_and_why():
    frame = _generations()
    metrics = json.loads(frame.filter(pl.col("number") == 2)["metrics"][0])
    metrics["improvement"] = {"improved": False, "reason": "not shown better than its parent: held-out following"}
    frame = frame.with_columns(
        pl.when(pl.col("number") == 2).then(pl.lit(json.dumps(metrics))).otherwise(pl.col("metrics")).alias("metrics")
    )
    markdown = build_markdown(parse_generations(frame))
    assert "| no: not shown better than its parent: held-out following |" in markdown
    assert "| gen-1 | gen-0 | passed | ship (simulated) | yes |" in markdown
