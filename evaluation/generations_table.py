"""The `generations` table: its schema (`GENERATIONS`, one row per recorded generation) and the metrics read
back from its JSON columns.

Its JSON columns carry what the generations report draws; every key is optional, and a missing or malformed
value reads as empty, so generations recorded by older code still read:

- `metrics` (`METRICS_VERSION` 1):
  - `win_rates`: list of {slice, judge, n, win_rate, ci_low, ci_high} (new generation vs its parent);
  - `steerability`: {"new"|"parent": {following_rate, violation_rate, n}} on the held-out cards the gates read;
  - `steerability_test` (optional): the same on the test cards, which no gate, threshold or choice of parent reads;
  - `improvement` (optional): {improved, by, reason, following: {new, parent, difference, ci_low, ci_high}}, whether
    the evidence decided the generation better than its parent (only then is it built upon);
  - `style`: {"new"|"parent": {mean_chars, mean_words, list_rate, emoji_rate, mean_emoji,
    stock_phrase_rate, refusal_rate, false_refusal_rate, n}};
  - `fluency` (optional): {"new"|"parent": {mean_slor, n, reason}, "difference": {mean_slor, n, ci_low, ci_high,
    unit}}: mean SLOR of the eval replies under the reference LM (`evaluation.fluency`), nats per token;
  - `reward_models`: {"pointwise"|"pairwise": {metric: value}} (held-out AUC, pair accuracy, ...);
  - `ab`: {source, simulated, verdict, lifts: {breadth|depth: {lift, delta_ci_low, delta_ci_high,
    boot_ci_low, boot_ci_high, delta_p_value, boot_p_value}}, srm: {p_value, srm, ...}, arms: [...]};
  - `ifeval` (optional): {"new"|"parent": {prompt_strict_acc, instruction_strict_acc, ..., n_prompts},
    "difference": {"instruction_strict"|"prompt_strict": {parent, new, difference, ci_low, ci_high, n_prompts}}}
    on the held-out half of the IFEval prompts (`evaluation.ifeval_heldout`);
- `inputs`: window days with content hashes, dataset content hashes, reward-model folders and hashes;
- `checkpoints`: paths of the generation's checkpoints;
- `gate_detail`: list of {gate, severity, detail}.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

METRICS_VERSION = 1
ROLES = ("new", "parent")
STYLE_METRICS = ("mean_chars", "list_rate", "emoji_rate", "stock_phrase_rate", "refusal_rate", "false_refusal_rate")
AB_METRICS = ("breadth", "depth")

GENERATIONS = pl.Schema(
    {
        "generation": pl.Utf8,
        "number": pl.Int64,
        "parent": pl.Utf8,
        "created_at": pl.Utf8,
        "recorded_at": pl.Utf8,
        "window_start": pl.Date,
        "window_end": pl.Date,
        "days": pl.List(pl.Utf8),
        # JSON documents (see the module docstring)
        "inputs": pl.Utf8,
        "checkpoints": pl.Utf8,
        "metrics": pl.Utf8,
        # passed | passed_with_warnings | failed
        "gate": pl.Utf8,
        "gate_detail": pl.Utf8,
        # ship | no-ship | inconclusive | invalid
        "ab_verdict": pl.Utf8,
        # simulate | lake
        "ab_source": pl.Utf8,
        # the run chart's measures, as plain columns so SQL reads them without JSON
        "released": pl.Boolean,
        # names of the release gates that blocked it (empty when released)
        "blocked_by": pl.List(pl.Utf8),
        # held-out character cards: share of replies keeping every rule, share of rule checks failed
        "steer_if_heldout": pl.Float64,
        "steer_violation_heldout": pl.Float64,
        # win rate against the parent per slice (pointwise judge)
        "win_rate_user": pl.Float64,
        "win_rate_internal": pl.Float64,
        # relative lifts of the simulated A/B readout
        "sim_breadth_lift": pl.Float64,
        "sim_depth_lift": pl.Float64,
        # the verdicts with insufficient evidence: gate names, and ab_readout when the A/B readout's model had too
        # little; they neither passed nor blocked
        "insufficient": pl.List(pl.Utf8),
    }
)
# column -> the JSON type it holds; anything else reads as empty
JSON_COLUMNS = {"inputs": dict, "checkpoints": dict, "metrics": dict, "gate_detail": list}


def _loads(value: Any, kind: type) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None  # a corrupt document must not take the page down: it shows as missing
    return value if isinstance(value, kind) else kind()


def parse_generations(generations: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows sorted by generation number, JSON columns decoded (an unreadable one becomes {})."""
    if generations.is_empty():
        return []
    frame = generations.sort("number") if "number" in generations.columns else generations
    rows = []
    for r in frame.iter_rows(named=True):
        row = dict(r)
        for col, kind in JSON_COLUMNS.items():
            row[col] = _loads(row.get(col), kind)
        rows.append(row)
    return rows


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _pointwise_win_rate(metrics: Mapping[str, Any], slice_name: str) -> float | None:
    for w in metrics.get("win_rates") or []:
        if isinstance(w, dict) and w.get("slice") == slice_name and w.get("judge") == "pointwise":
            return as_number(w.get("win_rate"))
    return None


def run_chart_columns(metrics: Mapping[str, Any], blocked_by: Sequence[str]) -> dict[str, Any]:
    """The `generations` table's plain columns of one generation, from its `metrics` document and the names of
    the release gates that blocked it (none: released)."""
    new_steer = as_dict(as_dict(metrics.get("steerability")).get("new"))
    lifts = as_dict(as_dict(metrics.get("ab")).get("lifts"))
    return {
        "released": not blocked_by,
        "blocked_by": sorted(blocked_by),
        "steer_if_heldout": as_number(new_steer.get("following_rate")),
        "steer_violation_heldout": as_number(new_steer.get("violation_rate")),
        "win_rate_user": _pointwise_win_rate(metrics, "eval_user"),
        "win_rate_internal": _pointwise_win_rate(metrics, "eval_internal"),
        "sim_breadth_lift": as_number(as_dict(lifts.get("breadth")).get("lift")),
        "sim_depth_lift": as_number(as_dict(lifts.get("depth")).get("lift")),
    }


def following_on_test_cards(metrics: Mapping[str, Any], role: str) -> float | None:
    """`role`'s (new | parent) following rate on the test cards, None when they were not answered."""
    return as_number(as_dict(as_dict(metrics.get("steerability_test")).get(role)).get("following_rate"))


def ifeval_of(metrics: Mapping[str, Any], role: str, accuracy: str = "instruction_strict_acc") -> float | None:
    """`role`'s (new | parent) IFEval `accuracy` on the held-out IFEval prompts, None when they were not answered."""
    return as_number(as_dict(as_dict(metrics.get("ifeval")).get(role)).get(accuracy))


def ifeval_difference(metrics: Mapping[str, Any], metric: str = "instruction_strict") -> dict[str, Any]:
    """new - parent on the held-out IFEval prompts for `metric` (instruction_strict | prompt_strict), with its
    paired interval; empty when not measured."""
    return as_dict(as_dict(as_dict(metrics.get("ifeval")).get("difference")).get(metric))


def fluency_of(metrics: Mapping[str, Any], role: str) -> float | None:
    """Mean SLOR of `role`'s (new | parent) eval replies, None when it was not measured."""
    return as_number(as_dict(as_dict(metrics.get("fluency")).get(role)).get("mean_slor"))


def metrics_long(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Every plotted figure as one long frame: generation, number, group, series, value, ci_low, ci_high."""
    out: list[dict[str, Any]] = []

    def add(row, group, series, value, lo=None, hi=None):
        out.append(
            {
                "generation": row["generation"],
                "number": row.get("number"),
                "group": group,
                "series": series,
                "value": as_number(value),
                "ci_low": as_number(lo),
                "ci_high": as_number(hi),
            }
        )

    for row in rows:
        m = as_dict(row.get("metrics"))
        for w in (x for x in m.get("win_rates") or [] if isinstance(x, dict)):
            add(
                row,
                "win_rate",
                f"{w.get('slice')}/{w.get('judge')}",
                w.get("win_rate"),
                w.get("ci_low"),
                w.get("ci_high"),
            )
        for role in ROLES:
            steer = as_dict(as_dict(m.get("steerability")).get(role))
            add(row, "steerability", f"following_rate/{role}", steer.get("following_rate"))
            add(row, "steerability", f"violation_rate/{role}", steer.get("violation_rate"))
            style = as_dict(as_dict(m.get("style")).get(role))
            for metric in STYLE_METRICS:
                add(row, "style", f"{metric}/{role}", style.get(metric))
            add(row, "fluency", f"mean_slor/{role}", fluency_of(m, role))
            for accuracy in ("instruction_strict", "prompt_strict"):
                add(row, "ifeval", f"{accuracy}/{role}", ifeval_of(m, role, f"{accuracy}_acc"))
        for metric, lift in as_dict(as_dict(m.get("ab")).get("lifts")).items():
            lift = as_dict(lift)
            add(row, "ab_lift", metric, lift.get("lift"), lift.get("delta_ci_low"), lift.get("delta_ci_high"))
    frame = pl.DataFrame(
        out,
        schema={
            "generation": pl.Utf8,
            "number": pl.Int64,
            "group": pl.Utf8,
            "series": pl.Utf8,
            "value": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
        },
    )
    return frame.filter(pl.col("value").is_not_null())
