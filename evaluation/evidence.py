"""How much evidence stands behind a verdict, and whether it is enough to decide one.

A verdict has three outcomes: it passes, it fails, or the evidence is *insufficient* to say. The third one
never passes and never blocks on its own; the release rule (`release_rule`) decides what a generation with
some undecided gates may do. The minima are the settings of `gate_config.GateConfig`:

- a slice with fewer than `min_slice_users` held-out users says little about users in general: a win rate
  over a handful of people is about those people;
- a judge must discriminate on held-out data better than a length-only model by `judge_margin` (held-out
  AUC for the pointwise engagement model, within turn-position strata when its validation measured them,
  since logged conversations end where they were recorded and a model that learnt only *where* a turn falls
  scores well without judging the reply; pair accuracy for the pairwise model), on at least
  `min_judge_heldout` held-out rows or pairs;
- the user simulator's minimum (its training users) is the A/B readout's, in `evaluation.user_simulator`.

The `describe*` functions turn the evidence documents the gates and the readout record into one line each,
for the generations report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from training.rewards.judge_minimums import NOT_TRAINED_ROW

OUTCOMES = ("pass", "fail", "insufficient")
# the held-out metric that decides whether a judge may judge, best first: stratified by turn position, then plain
JUDGE_METRICS = {"pointwise": ("auc_within_turn", "auc"), "pairwise": ("pair_accuracy",)}


def outcome(severity: str) -> str:
    """A gate's severity as a verdict: ok and warn pass, error fails, insufficient is neither."""
    return {"ok": "pass", "warn": "pass", "error": "fail"}.get(severity, "insufficient")


def judge_evidence(metrics: pl.DataFrame, margin: float, min_heldout: int) -> dict[str, dict[str, Any]]:
    """Per judge (the `model` column of the `reward_model_metrics` table: pointwise, pairwise): its held-out
    validation (`metric`, `value`, `length_baseline`, `n`) and whether it is `sufficient` to judge, with the
    `reason` when it is not. A judge without a validation row is insufficient; one the traffic had too little data
    to train (`training.rewards.judge_minimums`) says so, with its count (`n`)."""
    out: dict[str, dict[str, Any]] = {}
    if metrics.is_empty() or not {"model", "section", "metric", "value", "length_baseline", "n"} <= set(
        metrics.columns
    ):
        return out
    for judge, names in JUDGE_METRICS.items():
        unmade = metrics.filter(
            (pl.col("model") == judge)
            & (pl.col("section") == NOT_TRAINED_ROW[0])
            & (pl.col("metric") == NOT_TRAINED_ROW[1])
        )
        if unmade.height:
            row = unmade.row(0, named=True)
            reason = str(row.get("detail") or "not trained").split(";")[0]
            out[judge] = {"sufficient": False, "trained": False, "n": int(row["n"] or 0), "reason": reason}
            continue
        rows = metrics.filter((pl.col("model") == judge) & (pl.col("section") == judge) & pl.col("value").is_not_null())
        found = next((r for name in names for r in rows.filter(pl.col("metric") == name).iter_rows(named=True)), None)
        if found is None:
            out[judge] = {"sufficient": False, "reason": f"no held-out {' or '.join(names)} recorded"}
            continue
        value, baseline, n = found["value"], found["length_baseline"], int(found["n"] or 0)
        record = {
            "metric": found["metric"],
            "value": value,
            "length_baseline": baseline,
            "margin": margin,
            "n": n,
            "stratified": found["metric"].endswith("_within_turn"),
        }
        if n < min_heldout:
            reason = f"validated on {n} held-out rows (< {min_heldout})"
        elif baseline is None:
            reason = f"no length-only baseline for its held-out {found['metric']}"
        elif value < baseline + margin:
            reason = f"held-out {found['metric']} {value:.3f} does not beat the length-only {baseline:.3f} by {margin}"
        else:
            reason = None
        out[judge] = {**record, "sufficient": reason is None, "reason": reason}
    return out


def evidence_of(summary: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per slice: prompts judged, users and conversations behind them, and the interval's resampled unit."""
    cols = [c for c in ("users", "conversations", "unit") if c in summary.columns]
    out = {}
    for r in (
        summary.group_by("slice", maintain_order=True)
        .agg(pl.col("n").max().alias("prompts"), *[pl.col(c).first() for c in cols])
        .iter_rows(named=True)
    ):
        out[r.pop("slice")] = r
    return out


def describe_win_rate(w: Mapping[str, Any] | None) -> str:
    """Who stands behind a win rate: prompts, users, conversations and the unit its interval resampled."""
    if not w or w.get("win_rate") is None:
        return ""
    parts = [f"{w.get('n')} prompts"]
    parts += [f"{w[k]} {k}" for k in ("users", "conversations") if w.get(k) is not None]
    if w.get("unit"):
        parts.append(f"CI by {w['unit']}")
    return ", ".join(parts)


def _slice_text(slices: Mapping[str, Any]) -> list[str]:
    out = []
    for name, ev in slices.items():
        ev = _mapping(ev)
        counts = ", ".join(f"{ev[k]} {k}" for k in ("prompts", "users", "conversations") if ev.get(k) is not None)
        out.append(f"{name}: {counts}" + (f" (CI by {ev['unit']})" if ev.get("unit") else ""))
    return out


def _judge_text(judges: Mapping[str, Any]) -> list[str]:
    out = []
    for name, ev in judges.items():
        ev = _mapping(ev)
        if ev.get("metric") is None:
            out.append(f"judge {name}: {ev.get('reason') or 'no validation'}")
            continue
        verdict = "counts" if ev.get("sufficient") else f"does not count ({ev.get('reason')})"
        out.append(
            f"judge {name}: held-out {ev['metric']} {_num_text(ev.get('value'))} vs length-only "
            f"{_num_text(ev.get('length_baseline'))} on {ev.get('n')} rows: {verdict}"
        )
    return out


def describe(evidence: Any) -> str:
    """A gate's `evidence` document as one line: slices, judges, or whatever counts it recorded."""
    ev = _mapping(evidence)
    if not ev:
        return "—"
    parts = _slice_text(_mapping(ev.get("slices"))) + _judge_text(_mapping(ev.get("judges")))
    for key, value in ev.items():
        if key in ("slices", "judges"):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def describe_readout(ev: Mapping[str, Any]) -> str:
    """An A/B readout's `evidence` document as one line: the user simulator's training and refits."""
    if not ev:
        return "—"
    if "turns" not in ev:  # not simulated from a model: whatever counts the readout recorded
        return describe(ev)
    auc = _num_text(ev.get("heldout_auc"))
    return (
        f"user simulator trained on {ev.get('users')} users and {ev.get('turns')} turns (minimum "
        f"{ev.get('min_users')} users), held-out AUC {auc} on {ev.get('heldout_rows')} turns; interval includes "
        f"{ev.get('refits')} refits on resampled users; {ev.get('conversations')} replayed conversations"
    )


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _num_text(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "—"


def release_rule(severities: Mapping[str, str], min_decided: int) -> tuple[str, str, dict[str, Any]]:
    """(severity, detail, metadata) of the release rule over the gates' severities: a gate that failed blocks;
    an insufficient gate neither passes nor blocks; the release also needs at least `min_decided` gates decided
    (passed or failed), so a generation is never released on missing evidence alone."""
    decided = sorted(g for g, s in severities.items() if outcome(s) != "insufficient")
    insufficient = sorted(g for g, s in severities.items() if outcome(s) == "insufficient")
    meta = {"decided": decided, "insufficient": insufficient, "min_decided": min_decided}
    if len(decided) < min_decided:
        detail = (
            f"only {len(decided)} gates had enough evidence to decide ({', '.join(decided) or 'none'}; "
            f"insufficient: {', '.join(insufficient)}): a release needs at least {min_decided}"
        )
        return "error", detail, meta
    if insufficient:
        return "ok", f"{len(decided)} gates decided; insufficient evidence for {', '.join(insufficient)}", meta
    return "ok", f"all {len(decided)} gates decided", meta
