"""A few replies of the parent and the new generation side by side, with the rules each kept or broke.

Numbers say how often a rule holds; a reader also needs to see what the replies look like. For a few held-out
character-card prompts (one challenge per card, the first sample of each) the rules are the card's own, as the
steerability checkers scored them; for a few held-out pool prompts (taken alternately from each slice, in
prompt-id order, so every evaluation of a pair of policies shows the same ones) they are the style monitors'
(no list, no emoji, no stock phrase, no refusal), with the pointwise judge's score of each reply.
"""

from __future__ import annotations

from itertools import chain, zip_longest
from typing import Any

import polars as pl

from evaluation import style_monitor

SAMPLES_SCHEMA = pl.Schema(
    {
        "kind": pl.Utf8,  # card | pool
        "prompt_id": pl.Utf8,
        "slice": pl.Utf8,
        "character_id": pl.Utf8,
        "prompt": pl.Utf8,
        "parent": pl.Utf8,
        "new": pl.Utf8,
        "parent_kept": pl.List(pl.Utf8),
        "parent_broke": pl.List(pl.Utf8),
        "new_kept": pl.List(pl.Utf8),
        "new_broke": pl.List(pl.Utf8),
        "parent_score": pl.Float64,
        "new_score": pl.Float64,
    }
)
# style rule -> the response feature that breaks it
STYLE_RULES = {
    "no_list": "has_list",
    "no_emoji": "has_emoji",
    "no_stock_phrase": "has_stock_phrase",
    "no_refusal": "is_refusal",
}


def _last_user(messages: list[dict] | None) -> str:
    users = [m.get("content") or "" for m in messages or [] if m.get("role") == "user"]
    return users[-1] if users else ""


def card_samples(steer: pl.DataFrame, scored: dict[str, pl.DataFrame], replies: dict[str, list[str]], n: int):
    """Rows for the first sample (`#0`) of one challenge per held-out card, up to `n` cards; `scored[role]` is
    the steerability checkers' rows (prompt_id, checks) of that role's replies, `replies[role]` its replies in
    `steer`'s order."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    checks = {role: dict(zip(s["prompt_id"], s["checks"].to_list())) for role, s in scored.items()}
    for i, r in enumerate(steer.iter_rows(named=True)):
        if len(rows) >= n:
            break
        if not r["prompt_id"].endswith("#0") or r["character_id"] in seen:
            continue
        seen.add(r["character_id"])
        row = {
            "kind": "card",
            "prompt_id": r["prompt_id"].removesuffix("#0"),
            "slice": "steerability",
            "character_id": r["character_id"],
            "prompt": _last_user(r["messages"]),
        }
        for role in ("parent", "new"):
            found = checks[role].get(r["prompt_id"]) or []
            row[role] = replies[role][i]
            row[f"{role}_kept"] = [c["instruction"] for c in found if c["passed"]]
            row[f"{role}_broke"] = [c["instruction"] for c in found if not c["passed"]]
        rows.append(row)
    return rows


def pool_samples(sides: dict[str, pl.DataFrame], scores: dict[str, dict[str, float]], n: int):
    """Rows for `n` held-out pool prompts, alternately from each slice; `sides[role]` the replies (prompt_id,
    slice, prompt, response), `scores[role]` prompt_id -> the pointwise judge's score of that role's reply."""
    new, parent = sides["new"], sides["parent"].select("prompt_id", pl.col("response").alias("parent"))
    both = new.join(parent, on="prompt_id", how="inner").sort("slice", "prompt_id")
    per_slice = [g.head(n).iter_rows(named=True) for _, g in both.group_by("slice", maintain_order=True)]
    chosen = [r for r in chain.from_iterable(zip_longest(*per_slice)) if r is not None][:n]
    features = {
        role: style_monitor.response_features([r["response" if role == "new" else "parent"] for r in chosen])
        for role in ("parent", "new")
    }
    rows = []
    for i, r in enumerate(chosen):
        row = {
            "kind": "pool",
            "prompt_id": r["prompt_id"],
            "slice": r["slice"],
            "character_id": None,
            "prompt": r["prompt"],
            "parent": r["parent"],
            "new": r["response"],
        }
        for role in ("parent", "new"):
            f = features[role].row(i, named=True)
            row[f"{role}_kept"] = [rule for rule, flag in STYLE_RULES.items() if not f[flag]]
            row[f"{role}_broke"] = [rule for rule, flag in STYLE_RULES.items() if f[flag]]
            row[f"{role}_score"] = scores.get(role, {}).get(r["prompt_id"])
        rows.append(row)
    return rows


def side_by_side(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SAMPLES_SCHEMA)
