"""Steerability training data: every generation learns to keep its character cards' rules.

Training draws only on the suite's `train` cards (`engine.cards`), so the held-out cards the release gate
measures stay unseen. Three kinds of data come from them, all judged by the rule checkers evaluation reports
with (`engine.rules`):

- rejection sampling: a candidate reply to a training-card prompt enters the SFT set only when it keeps
  every instruction of its card and clears the reward-model floor (`sft_dataset.build_sft_dataset`
  reads the `rules_kept` column this module adds to the candidates);
- preference pairs: a reply that keeps its card's instructions against one of similar length that breaks
  them (`steer_pairs`), so DPO learns the rule rather than a length difference;
- the GRPO rule reward (`RuleChecks` in `training.policy.grpo`) reads the card's instructions that
  `steer_rl_rows` puts next to each training-card prompt.

A sampled reply that breaks only rules of form (letter case, a signature, emoji) is also repaired
(`engine.rule_repair`) into a candidate of its own (`with_repairs`): without it a small policy, which almost
never writes a whole reply in lowercase or signs it, has nothing to learn those rules from, and the one
generation that samples a few such replies teaches a rule the next one forgets. The repaired reply against its
own sampled original is the closest preference pair there is: the same words, one rule apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from engine.cards import TRAIN, build_prompts
from engine.rule_repair import REPAIRABLE, repair_reply
from engine.rules import check_instruction
from engine.style import style_features
from pipeline.prompts import chat_messages

# Prompt ids of training-card prompts start with this, so any table shows where a row came from.
PREFIX = "steer:"
# A repaired candidate's generator is its original's with this suffix (its sample_idx is the original's).
REPAIRED = "+repaired"


@dataclass(frozen=True)
class SteerDataConfig:
    # no_emoji is kept by every policy the suite has seen (its violation rate is 0 from gen-0 on): repairing it
    # would only add rows that teach nothing
    repair_rules: tuple[str, ...] = field(
        default=("case", "sign_with_name"),
        metadata={
            "help": "rules of form (among case, sign_with_name, no_emoji) that a sampled training-card reply is "
            "repaired to keep, as a candidate of its own; () samples only (see engine.rule_repair)"
        },
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.repair_rules) - set(REPAIRABLE))
        if unknown:
            raise ValueError(
                f"repair_rules has {unknown}, which no change of form can keep; set `repair_rules` to a subset of "
                f"{list(REPAIRABLE)} (or () to learn from sampled replies only)"
            )


def steer_prompts(suite: dict | None = None) -> pl.DataFrame:
    """The training cards' prompts in the shape candidates and dataset builders read (schema.PROMPTS'
    prompt_id, system, history, day, split) plus the card's `instructions` (JSON) and `character_id`."""
    base = build_prompts(suite, split=TRAIN)
    return base.select(
        (pl.lit(PREFIX) + pl.col("prompt_id")).alias("prompt_id"),
        "system",
        pl.col("messages").alias("history"),
        pl.lit(None, pl.Date).alias("day"),
        pl.lit("train").alias("split"),
        "character_id",
        "instructions",
    )


def violations(instructions: str, text: str | None) -> list[str]:
    """The instruction types of a card (JSON specs) that `text` breaks; a missing reply breaks them all."""
    specs = json.loads(instructions)
    if text is None:
        return [s["type"] for s in specs]
    return [s["type"] for s in specs if not check_instruction(s, text)[0]]


def check_candidates(candidates: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
    """`candidates` with `rules_kept` (bool) and `violated` (instruction types) for replies to prompts that
    carry card instructions; null for every other reply (served-traffic prompts have no card rules)."""
    cards = (
        dict(prompts.filter(pl.col("instructions").is_not_null()).select("prompt_id", "instructions").iter_rows())
        if "instructions" in prompts.columns
        else {}
    )
    violated = [
        violations(cards[pid], text) if pid in cards else None
        for pid, text in candidates.select("prompt_id", "text").iter_rows()
    ]
    return candidates.with_columns(
        pl.Series("violated", violated, dtype=pl.List(pl.Utf8)),
    ).with_columns(rules_kept=pl.col("violated").list.len() == 0)


def with_repairs(
    candidates: pl.DataFrame,
    prompts: pl.DataFrame,
    score_fn: Callable[[list[list[dict]], list[str]], Sequence[float] | np.ndarray] | None,
    cfg: SteerDataConfig | None = None,
) -> tuple[pl.DataFrame, dict]:
    """`candidates` (checked by `check_candidates`) with a repaired candidate for every training-card reply that a
    change of form (`cfg.repair_rules`) brings to keep every rule of its card, and counts per outcome.

    A repaired candidate keeps its original's `sample_idx`, gets the generator `<original's>+repaired`, its own
    style features and reward-model score (`score_fn`, as sampled candidates get theirs), no token count (it
    was not sampled) and its original's `ended`: a reply cut off at the token limit stays cut off when repaired.
    A reply whose broken rules include one no change of form keeps stays as it is."""
    cfg = cfg or SteerDataConfig()
    counts = {"repaired": 0, "not_repairable": 0, "still_broken": 0}
    if not cfg.repair_rules or "rules_kept" not in candidates.columns or candidates.is_empty():
        return candidates, counts
    by_id = (
        {r["prompt_id"]: r for r in prompts.filter(pl.col("instructions").is_not_null()).iter_rows(named=True)}
        if "instructions" in prompts.columns
        else {}
    )
    broken = candidates.filter((pl.col("rules_kept") == False) & pl.col("prompt_id").is_in(list(by_id)))  # noqa: E712
    rows, contexts = [], []
    repairable = set(cfg.repair_rules)
    for cand in broken.iter_rows(named=True):
        if not set(cand["violated"]) <= repairable:
            counts["not_repairable"] += 1
            continue
        prompt = by_id[cand["prompt_id"]]
        text = repair_reply(json.loads(prompt["instructions"]), cand["text"], cfg.repair_rules)
        if violations(prompt["instructions"], text):
            counts["still_broken"] += 1
            continue
        counts["repaired"] += 1
        style = style_features(text)
        rows.append(
            {
                **{k: cand[k] for k in candidates.columns},
                "generator": f"{cand['generator']}{REPAIRED}",
                "text": text,
                "p_continue": None,
                "n_tokens": None,
                "n_chars": style["n_chars"],
                "n_emoji": style["n_emoji"],
                "has_list": style["has_list"],
                "violated": [],
                "rules_kept": True,
            }
        )
        contexts.append(chat_messages(prompt["system"], prompt["history"]))
    if not rows:
        return candidates, counts
    if score_fn is not None:
        scores = np.asarray(score_fn(contexts, [r["text"] for r in rows]), dtype=np.float64).reshape(-1)
        for r, s in zip(rows, scores, strict=True):
            r["rm_pointwise"] = float(s) if np.isfinite(s) else None
    else:
        for r in rows:
            r["rm_pointwise"] = None
    repaired = pl.DataFrame(rows, schema=candidates.schema)
    return pl.concat([candidates, repaired]), counts


def steer_pairs(
    prompts: pl.DataFrame, candidates: pl.DataFrame, max_length_delta: int = 80
) -> tuple[list[dict], list[dict]]:
    """Per training-card prompt: the best-scoring reply that keeps every rule (chosen) against the rule-breaking
    reply closest to it in length (rejected). Returns (pairs in the preference builder's dict form, drop rows).

    A prompt with no rule-keeping or no rule-breaking reply, or whose closest breaker differs by more than
    `max_length_delta` characters, gives no pair and a drop row naming why.
    """
    by_id = {r["prompt_id"]: r for r in prompts.iter_rows(named=True)}
    checked = candidates.filter(pl.col("rules_kept").is_not_null() & pl.col("prompt_id").is_in(list(by_id)))
    pairs, drops = [], []
    for (pid,), group in checked.sort("prompt_id", "generator", "sample_idx").group_by(
        "prompt_id", maintain_order=True
    ):
        # a sampled keeper first: a repaired one would put the pair on a rule of form where the policy had
        # already shown it can keep the rule of content the card asks too
        keep = (
            group.filter(pl.col("rules_kept"))
            .with_columns(repaired=pl.col("generator").str.ends_with(REPAIRED))
            .sort("repaired", "rm_pointwise", descending=[False, True], nulls_last=True)
        )
        broke = group.filter(~pl.col("rules_kept"))
        row_id = f"{pid}/steer_pair"
        if keep.is_empty() or broke.is_empty():
            reason = "no_rule_keeping_reply" if keep.is_empty() else "no_rule_breaking_reply"
            drops.append({"day": None, "row_id": row_id, "reason_code": reason})
            continue
        chosen = keep.row(0, named=True)
        gap = (broke["text"].str.len_chars().cast(pl.Int64) - len(chosen["text"])).abs()
        rejected = broke.with_columns(gap=gap).sort("gap", "sample_idx").row(0, named=True)
        if rejected["gap"] > max_length_delta:
            drops.append(
                {"day": None, "row_id": row_id, "reason_code": "steer_length_delta", "detail": f"gap={rejected['gap']}"}
            )
            continue
        p = by_id[pid]
        pairs.append(
            {
                "pair_id": row_id,
                "prompt_id": pid,
                "prompt": chat_messages(p["system"], p["history"]),
                "chosen": chosen["text"],
                "rejected": rejected["text"],
                "source": "steerability",
                "margin": float(len(rejected["violated"])),
                "day": None,
            }
        )
    return pairs, drops


def steer_rl_rows(prompts: pl.DataFrame) -> list[dict]:
    """RL rows of the training-card prompts: the chat prompt and the card's instructions for `RuleChecks`."""
    return [
        {
            "prompt": chat_messages(r["system"], r["history"]),
            "prompt_id": r["prompt_id"],
            "instructions": r["instructions"],
        }
        for r in prompts.filter(pl.col("instructions").is_not_null()).iter_rows(named=True)
    ]
