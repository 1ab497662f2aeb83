from __future__ import annotations

import polars as pl
import pytest

from evaluation.gate_config import GateConfig
from evaluation.release_gates import (
    artifact_drift,
    release_decision,
    slice_divergence,
    steerability_regression,
    train_eval_disjoint,
    win_rate_ceiling,
)
from evaluation.style_monitor import monitor


def _wr(internal: float, user: float, judge: str = "rm") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "slice": ["eval_internal", "eval_user"],
            "judge": [judge, judge],
            "n": [200, 200],
            "win_rate": [internal, user],
            "ci_low": [internal - 0.05, user - 0.05],
            "ci_high": [internal + 0.05, user + 0.05],
        }
    )


@pytest.mark.parametrize("internal, user, severity", [(0.55, 0.58, "ok"), (0.55, 0.62, "warn"), (0.66, 0.55, "error")])
def test_win_rate_ceiling(internal, user, severity):
    passed, sev, detail, meta = win_rate_ceiling(_wr(internal, user))
    assert sev == severity and passed == (severity != "error")
    assert meta["gate"] == "win_rate_ceiling" and meta["max_win_rate"] == max(internal, user)
    if severity != "ok":
        assert "eval_" in detail


def test_win_rate_ceiling_needs_every_slice():
    only_user = _wr(0.5, 0.5).filter(pl.col("slice") == "eval_user")
    result = win_rate_ceiling(only_user)
    assert not result.passed and "eval_internal" in result.detail


def test_slice_divergence():
    ok = slice_divergence(_wr(0.52, 0.60))
    assert ok.passed and ok.metadata["max_gap"] == pytest.approx(0.08)
    two_judges = pl.concat([_wr(0.52, 0.58, "rm"), _wr(0.45, 0.60, "bt")])
    bad = slice_divergence(two_judges)
    assert not bad.passed and bad.severity == "error" and "bt" in bad.detail
    assert not slice_divergence(_wr(0.5, 0.5).head(1)).passed  # cannot compare: not a pass


def test_a_gap_within_a_small_slices_noise_warns():
    # 21 internal prompts: 9 wins (0.43, interval 0.24 .. 0.67) against 0.54 on 150 user prompts
    small = pl.DataFrame(
        {
            "slice": ["eval_internal", "eval_user"],
            "judge": ["rm", "rm"],
            "n": [21, 150],
            "win_rate": [9 / 21, 0.54],
            "ci_low": [0.238, 0.46],
            "ci_high": [0.667, 0.627],
        }
    )
    noisy = slice_divergence(small)
    assert noisy.passed and noisy.severity == "warn" and "within noise" in noisy.detail and "21" in noisy.detail
    assert noisy.metadata["z"]["rm"] == pytest.approx(0.111 / 0.1175, abs=0.02)
    strict = slice_divergence(small, GateConfig(slice_divergence_z=0))
    assert not strict.passed and strict.severity == "error"
    # the same gap measured on large slices is real
    assert not slice_divergence(_wr(9 / 21, 0.54)).passed


def _steer(following: float, violations: dict[str, float]) -> pl.DataFrame:
    rows = [{"level": "overall", "key": "all", "n": 50, "following_rate": following, "violation_rate": 0.1}]
    rows += [
        {"level": "instruction", "key": k, "n": 20, "following_rate": 1 - v, "violation_rate": v}
        for k, v in violations.items()
    ]
    return pl.DataFrame(rows)


def test_steerability_regression():
    prev = _steer(0.80, {"no_emoji": 0.10, "keep_name": 0.05})
    assert steerability_regression(_steer(0.79, {"no_emoji": 0.11, "keep_name": 0.05}), prev).severity == "ok"
    warn = steerability_regression(_steer(0.80, {"no_emoji": 0.20, "keep_name": 0.05}), prev)
    assert warn.passed and warn.severity == "warn" and "no_emoji" in warn.detail
    err = steerability_regression(_steer(0.75, {"no_emoji": 0.10, "keep_name": 0.05}), prev)
    assert not err.passed and err.metadata["drop"] == pytest.approx(0.05)
    looser = steerability_regression(_steer(0.75, {}), prev, GateConfig(steerability_tolerance=0.06))
    assert looser.passed


def _steer_rows(followed: list[int], samples: int = 4) -> pl.DataFrame:
    """Per-reply rows: prompt k's `samples` replies, `followed[k]` of which keep every rule."""
    rows = [
        {"prompt_id": f"card{k}#{j}", "all_followed": j < f} for k, f in enumerate(followed) for j in range(samples)
    ]
    return pl.DataFrame(rows)


def test_a_steerability_drop_within_the_card_prompts_noise_warns_and_a_clear_one_fails():
    prev = _steer(0.80, {})
    # 50 card prompts, 4 samples each: ten prompts lose a kept reply and five gain one, a net drop of 0.025
    base = [3, 3, 2, 2, 3] * 10
    noisy = [f - 1 if k % 5 == 0 else f + 1 if k % 10 == 1 else f for k, f in enumerate(base)]
    dropped = steerability_regression(_steer(0.775, {}), prev, None, _steer_rows(noisy), _steer_rows(base))
    assert dropped.passed and dropped.severity == "warn" and "within noise" in dropped.detail
    assert dropped.metadata["ci_high"] >= 0 and dropped.metadata["evidence"]["card_prompts"] == 50
    # every prompt loses a kept reply: a drop of 0.25 whose interval is all below 0
    clear = [max(f - 1, 0) for f in base]
    failed = steerability_regression(_steer(0.55, {}), prev, None, _steer_rows(clear), _steer_rows(base))
    assert not failed.passed and failed.severity == "error" and failed.metadata["ci_high"] < 0
    # without per-reply rows the point rule stands
    assert steerability_regression(_steer(0.775, {}), prev).severity == "error"


def test_artifact_drift_on_monitor_output():
    prev_replies = pl.DataFrame({"response": ["A fine answer of some length."] * 10})
    same = monitor(prev_replies)
    ten = GateConfig(min_artifact_replies=10)
    assert artifact_drift(same, monitor(prev_replies), ten).severity == "ok"
    longer = monitor(pl.DataFrame({"response": ["A fine answer of some length, now padded a lot longer."] * 10}))
    res = artifact_drift(longer, same, ten)
    assert not res.passed and "mean_chars" in res.detail
    one_emoji = ["A fine answer of some length 🎉"] + ["A fine answer of some lengt."] * 9
    emoji = monitor(pl.DataFrame({"response": one_emoji}))
    res = artifact_drift(
        emoji, same, GateConfig(artifact_bands={"emoji_rate": ("absolute", 0.11)}, min_artifact_replies=10)
    )
    assert res.passed and res.severity == "warn"  # 0.10 drift is past 80% of the 0.11 band
    missing = artifact_drift({"mean_chars": 10.0}, {"mean_chars": 10.0})
    assert not missing.passed and "missing" in missing.detail


def test_artifact_drift_over_a_handful_of_replies_is_insufficient_evidence():
    # one stock phrase in four replies is a rate of 0.25, far past any band: a handful of replies decides nothing
    parent = monitor(pl.DataFrame({"response": ["A fine answer of some length."] * 4}))
    new = monitor(pl.DataFrame({"response": ["As an AI, I cannot say."] + ["A fine answer of some length."] * 3}))
    gate = artifact_drift(new, parent)
    assert gate.severity == "insufficient"
    assert "new 4, parent 4 replies (< 30)" in gate.detail
    assert gate.metadata["evidence"]["min_replies"] == 30
    assert artifact_drift(new, parent, GateConfig(min_artifact_replies=4)).severity != "insufficient"


def test_train_eval_disjoint():
    train = pl.DataFrame({"prompt_id": ["t1", "t2", "shared"], "text": ["Hello there", "How  ARE you?", "x"]})
    clean = pl.DataFrame({"prompt_id": ["e1"], "text": ["Something else"]})
    assert train_eval_disjoint(train, clean).passed
    leaky = pl.DataFrame({"prompt_id": ["e1", "shared", "e3"], "text": ["how are you?", "y", "new"]})
    res = train_eval_disjoint(train, leaky)
    assert not res.passed
    assert (res.metadata["n_overlap_by_id"], res.metadata["n_overlap_by_text"], res.metadata["n_overlap"]) == (1, 1, 2)
    assert res.metadata["examples"] == ["e1", "shared"]
    assert train_eval_disjoint(train, leaky, GateConfig(max_train_eval_overlap=2)).passed


def test_release_decision_and_report():
    results = [win_rate_ceiling(_wr(0.55, 0.62)), slice_divergence(_wr(0.55, 0.62))]
    decision = release_decision(results)
    assert decision.passed and decision.severity == "warn" and decision.metadata["warned"] == ["win_rate_ceiling"]
    results.append(slice_divergence(_wr(0.40, 0.62)))
    assert not release_decision(results).passed
    assert not release_decision([]).passed


def _rule_rows(violations: dict[str, list[int]], samples: int = 4) -> pl.DataFrame:
    """Per-reply rows with their rule checks: on prompt k, `violations[rule][k]` of the `samples` replies break
    `rule`; every prompt's card carries every rule."""
    n = len(next(iter(violations.values())))
    rows = []
    for k in range(n):
        for j in range(samples):
            checks = [{"instruction": r, "passed": j >= v[k], "detail": ""} for r, v in violations.items()]
            rows.append(
                {"prompt_id": f"card{k}#{j}", "all_followed": all(c["passed"] for c in checks), "checks": checks}
            )
    return pl.DataFrame(rows)


def test_a_rule_forgotten_beyond_its_noise_fails_though_the_overall_rate_holds():
    # 40 card prompts, 4 samples: the parent breaks `case` on 1 reply in 8, the new policy on 5 in 8
    parent = _rule_rows({"case": [1, 0] * 20, "no_emoji": [1, 1] * 20})
    forgot = _rule_rows({"case": [3, 2] * 20, "no_emoji": [1, 1] * 20})
    prev = _steer(0.80, {"case": 0.125, "no_emoji": 0.25})
    new = _steer(0.80, {"case": 0.625, "no_emoji": 0.25})
    gate = steerability_regression(new, prev, None, forgot, parent)
    assert not gate.passed and gate.severity == "error" and gate.metadata["forgotten_rules"] == ["case"]
    assert "rules forgotten: case +0.500" in gate.detail and "over 40 card prompts" in gate.detail
    rules = {r["rule"]: r for r in gate.metadata["rules"]}
    assert rules["case"]["ci_low"] > 0 and rules["case"]["rise"] == pytest.approx(0.5)
    assert rules["no_emoji"]["rise"] == pytest.approx(0.0)


def test_a_rule_rise_within_its_noise_warns():
    # two of 40 prompts break `case` on all their replies: a rise of 0.05 whose interval over the prompts holds 0
    parent = _rule_rows({"case": [0] * 40})
    noisy = _rule_rows({"case": [4, 4] + [0] * 38})
    gate = steerability_regression(_steer(0.80, {"case": 0.05}), _steer(0.80, {"case": 0.0}), None, noisy, parent)
    assert gate.passed and gate.severity == "warn" and "violation rates rose within noise: case" in gate.detail
    assert gate.metadata["forgotten_rules"] == [] and gate.metadata["rules"][0]["ci_low"] <= 0


def test_learning_to_end_replies_is_no_drift_but_rambling_into_the_limit_is():
    parent = {"mean_chars": 60.0, "cut_off_rate": 0.14}
    bands = GateConfig(artifact_bands={"mean_chars": ("relative", 0.20), "cut_off_rate": ("rise", 0.10)})
    assert artifact_drift({"mean_chars": 58.0, "cut_off_rate": 0.03}, parent, bands).severity == "ok"
    rambling = artifact_drift({"mean_chars": 58.0, "cut_off_rate": 0.30}, parent, bands)
    assert rambling.severity == "error" and "cut_off_rate: 0.14 -> 0.3" in rambling.detail
    with pytest.raises(ValueError, match="'rise'"):
        GateConfig(artifact_bands={"cut_off_rate": ("up", 0.1)})


def test_lengths_are_not_compared_when_no_reply_ended():
    parent = {"mean_chars": 60.0, "mean_words": 12.0, "cut_off_rate": 0.2, "n_ended": 8}
    bands = GateConfig(
        artifact_bands={"mean_chars": ("relative", 0.2), "mean_words": ("relative", 0.2), "cut_off_rate": ("rise", 0.1)}
    )
    all_cut = {"mean_chars": None, "mean_words": None, "cut_off_rate": 1.0, "n_ended": 0}
    gate = artifact_drift(all_cut, parent, bands)
    assert gate.severity == "error" and "cut_off_rate" in gate.detail  # the rise to 1.0 still fails
    same = artifact_drift(all_cut, {**parent, "n_ended": 0, "cut_off_rate": 1.0}, bands)
    assert same.severity == "warn" and "mean_chars: not compared, no reply of the new or parent ended" in same.detail
