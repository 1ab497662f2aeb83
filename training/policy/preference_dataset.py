"""The preference pairs of one generation: per prompt the best candidate against the worst one of about its length
(with a score margin), character-card pairs and annotation pairs; pairs whose chosen and rejected differ too much in
length or emoji are dropped, and each source is length-balanced (training.rewards.length_bias.balance_shifts), so
DPO does not learn those artifacts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import polars as pl

from engine.style import count_emoji
from pipeline import schema
from pipeline.digest import frame_digest, rows_digest
from training.policy.dataset_lineage import (
    BuildResult,
    counts_by_reason,
    split_filter,
    to_dataset,
)
from training.policy.datasets_build import (
    PiiCheck,
    check_length_balance,
    prompt_index,
    rule_checked,
    without_length_trend,
)
from training.policy.models import chat_messages
from training.policy.steer_data import steer_pairs
from training.rewards.length_bias import balance_lengths, log_chars

PREFERENCE_PAIRS = schema.PREFERENCE_PAIRS


# ---------------------------------------------------------------------------------------------------------------
# Preference pairs


@dataclass
class PreferenceBuildConfig:
    min_margin: float = field(
        default=0.0, metadata={"help": "Candidate pairs need best - worst score above this (ties never pass)."}
    )
    max_length_delta: int = field(
        default=200,
        metadata={
            "help": "Pairs whose chosen and rejected lengths differ by more characters than "
            "this are dropped (length_delta), so DPO does not learn 'longer is better'."
        },
    )
    max_emoji_delta: int = field(
        default=2, metadata={"help": "Pairs whose emoji counts differ by more than this are dropped (emoji_delta)."}
    )
    steer_max_length_delta: int = field(
        default=80,
        metadata={
            "help": "On a character card's prompt, the rule-breaking reply paired against a rule-keeping one is the "
            "closest in length, and must be within this many characters (else steer_length_delta)."
        },
    )
    max_length_ratio: float = field(
        default=1.5,
        metadata={
            "help": "On a traffic prompt, the rejected reply is the lowest-scored candidate whose length (1 + chars) "
            "is within this factor of the chosen one's; a prompt with none gives no pair (length_unmatched)."
        },
    )
    length_balance: float | None = field(
        default=0.05,
        metadata={
            "help": "Per pair source, the chosen replies' mean characters must lie within this relative difference of "
            "the rejected ones'; the pairs that pull it furthest are left out as length_balance "
            "(training.rewards.length_bias.balance_shifts), so DPO does not learn shorter or longer. None keeps all."
        },
    )
    length_balance_exempt: tuple[str, ...] = field(
        default=("steerability",),
        metadata={
            "help": "Pair sources the length balance leaves as they are: a card's rules set the length of the reply "
            "that keeps them, and its pairs are matched by length already (`steer_max_length_delta`)."
        },
    )
    length_neutral: bool = field(
        default=True,
        metadata={
            "help": "Choose the best and worst candidate by the reward minus its within-prompt length trend, so the "
            "pairs do not teach the reward model's length preference (the character-card pairs are matched by "
            "length anyway). False uses the raw score."
        },
    )
    train_splits: tuple[str, ...] = field(
        default=("train",), metadata={"help": "Prompt splits that may be trained on (when prompts have `split`)."}
    )

    def __post_init__(self) -> None:
        self.train_splits = tuple(self.train_splits)
        self.length_balance_exempt = tuple(self.length_balance_exempt)
        if self.min_margin < 0:
            raise ValueError(f"min_margin={self.min_margin} must be >= 0")
        if min(self.max_length_delta, self.max_emoji_delta, self.steer_max_length_delta) < 0:
            raise ValueError("max_length_delta, max_emoji_delta and steer_max_length_delta must be >= 0")
        if not self.max_length_ratio >= 1.0:
            raise ValueError(f"max_length_ratio={self.max_length_ratio} must be >= 1 (e.g. 1.5)")
        check_length_balance(self.length_balance)


def _pair_reason(pair: dict, cfg: PreferenceBuildConfig, pii_check: PiiCheck | None) -> str | None:
    if not (pair["chosen"] or "").strip() or not (pair["rejected"] or "").strip():
        return "empty_response"
    if pair["chosen"] == pair["rejected"]:
        return "identical"
    if not pair["prompt"] or pair["prompt"][-1]["role"] != "user":
        return "bad_prompt"
    if pair["margin"] is not None and pair["margin"] <= cfg.min_margin:
        return "low_margin"
    if abs(pair["delta_len"]) > cfg.max_length_delta:
        return "length_delta"
    if abs(pair["delta_emoji"]) > cfg.max_emoji_delta:
        return "emoji_delta"
    if pii_check is not None and (pii_check(pair["chosen"]) or pii_check(pair["rejected"])):
        return "pii"
    return None


def _with_deltas(pair: dict) -> dict:
    chosen, rejected = pair["chosen"] or "", pair["rejected"] or ""
    return dict(pair, delta_len=len(chosen) - len(rejected), delta_emoji=count_emoji(chosen) - count_emoji(rejected))


def _balance_pairs(
    pairs: list[dict], tolerance: float | None, drop_rows: list[dict], exempt: tuple[str, ...] = ()
) -> dict:
    """Mark `length_balance` on the kept pairs, per source, that pull the chosen replies' mean characters more
    than `tolerance` (relative) from the rejected ones'; returns each source's relative difference before and
    after."""
    report: dict[str, dict] = {}
    for source in sorted({p["source"] for p in pairs}):
        live = [p for p in pairs if p["source"] == source and p["drop_reason"] is None]
        if not live:
            continue
        chosen = [float(len(p["chosen"] or "")) for p in live]
        rejected = [float(len(p["rejected"] or "")) for p in live]
        out, shifts, report[source] = balance_lengths(chosen, rejected, tolerance, source in exempt)
        for i in sorted(out):
            live[i]["drop_reason"] = "length_balance"
            drop_rows.append(
                {
                    "day": live[i]["day"],
                    "row_id": live[i]["pair_id"],
                    "reason_code": "length_balance",
                    "detail": f"shift={shifts[i]:+.3f}",
                }
            )
    return report


def build_preference_dataset(
    prompts: pl.DataFrame,
    candidates: pl.DataFrame,
    cfg: PreferenceBuildConfig | None = None,
    *,
    annotation_pairs: pl.DataFrame | None = None,
    pii_check: PiiCheck | None = None,
    parents: dict[str, str] | None = None,
) -> BuildResult:
    """Preference pairs as TRL's conversational preference dataset: `prompt` (messages), `chosen` and `rejected`
    (one assistant message each), plus `pair_id` and `source`.

    `annotation_pairs` (training.rewards.annotation_set.PAIRS) has `pair_id, prompt (messages), chosen, rejected, source,
    margin` (margin may be null: a human label needs none). The returned frame (PREFERENCE_PAIRS) holds every
    pair, dropped ones with their `drop_reason`; the DROPS frame holds the same reasons plus prompts with too
    few scored candidates.
    """
    cfg = cfg or PreferenceBuildConfig()
    stage = "preference_data"
    prompts, drop_rows = split_filter(prompts, cfg.train_splits)
    candidates = rule_checked(prompts, candidates)
    raw_candidates = candidates  # lineage hashes the scores as the reward model gave them
    card_ids = (
        prompts.filter(pl.col("instructions").is_not_null())["prompt_id"] if "instructions" in prompts.columns else []
    )
    candidates, length_trend = without_length_trend(candidates, cfg.length_neutral, card_ids)
    by_id = prompt_index(prompts)
    pairs: list[dict] = []
    steer_ids = {pid for pid, p in by_id.items() if p.get("instructions")}
    if steer_ids:
        # character-card prompts pair by the card's rules, not by the engagement reward
        steer, steer_drops = steer_pairs(prompts, candidates, cfg.steer_max_length_delta)
        pairs += [_with_deltas(p) for p in steer]
        drop_rows += steer_drops
    scored = candidates.filter(
        pl.col("rm_pointwise").is_not_null()
        & pl.col("prompt_id").is_in(list(by_id))
        & ~pl.col("prompt_id").is_in(list(steer_ids))
    )
    for (pid,), group in scored.sort("prompt_id", "generator", "sample_idx").group_by("prompt_id", maintain_order=True):
        p = by_id[pid]
        if group.height < 2:
            drop_rows.append({"day": p["day"], "row_id": f"{pid}/pair", "reason_code": "too_few_candidates"})
            continue
        ranked = group.sort("rm_pointwise", descending=True, maintain_order=True)
        # a reply run into the token limit is never the chosen one: DPO would learn to stop mid-sentence
        ended = ranked.filter(pl.col("ended").fill_null(True)) if "ended" in ranked.columns else ranked
        if ended.is_empty():
            drop_rows.append({"day": p["day"], "row_id": f"{pid}/pair", "reason_code": "cut_off"})
            continue
        best = ended.row(0, named=True)
        # the worst-scored reply of about the chosen one's length: the extremes of a few candidates differ in
        # length as much as in anything else, and DPO would learn that difference
        others = ranked.filter(
            (pl.col("generator") != best["generator"]) | (pl.col("sample_idx") != best["sample_idx"])
        )
        matched = others.filter(
            (log_chars("text") - math.log1p(len(best["text"] or ""))).abs() <= math.log(cfg.max_length_ratio)
        )
        if matched.is_empty():
            drop_rows.append({"day": p["day"], "row_id": f"{pid}/pair", "reason_code": "length_unmatched"})
            continue
        worst = matched.row(-1, named=True)
        pairs.append(
            _with_deltas(
                {
                    "pair_id": f"{pid}/pair",
                    "prompt_id": pid,
                    "prompt": chat_messages(p["system"], p["history"]),
                    "chosen": best["text"],
                    "rejected": worst["text"],
                    "source": "candidates",
                    "margin": best["rm_pointwise"] - worst["rm_pointwise"],
                    "day": p["day"],
                }
            )
        )
    for r in annotation_pairs.iter_rows(named=True) if annotation_pairs is not None else []:
        pairs.append(
            _with_deltas(
                {
                    "pair_id": str(r["pair_id"]),
                    "prompt_id": r.get("prompt_id"),
                    "prompt": r["prompt"] or [],
                    "chosen": r["chosen"],
                    "rejected": r["rejected"],
                    "source": r.get("source") or "annotation",
                    "margin": r.get("margin"),
                    "day": r.get("day"),
                }
            )
        )
    for pair in pairs:
        pair["drop_reason"] = _pair_reason(pair, cfg, pii_check)
        if pair["drop_reason"]:
            drop_rows.append(
                {
                    "day": pair["day"],
                    "row_id": pair["pair_id"],
                    "reason_code": pair["drop_reason"],
                    "detail": f"delta_len={pair['delta_len']} delta_emoji={pair['delta_emoji']}",
                }
            )
    length_balance = _balance_pairs(pairs, cfg.length_balance, drop_rows, cfg.length_balance_exempt)
    kept = [p for p in pairs if p["drop_reason"] is None]
    rows = [
        {
            "prompt": p["prompt"],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
            "pair_id": p["pair_id"],
            "source": p["source"],
        }
        for p in kept
    ]
    frame = schema.conform(
        pl.DataFrame([{k: p[k] for k in PREFERENCE_PAIRS.names()} for p in pairs] or None, schema=PREFERENCE_PAIRS),
        PREFERENCE_PAIRS,
    )
    drops = schema.drops_frame(drop_rows, stage)
    manifest = {
        "kind": "preference",
        "rows": len(rows),
        "pairs_considered": len(pairs),
        "length_trend": length_trend,
        # per source: relative difference of the chosen replies' mean characters from the rejected ones', before
        # and after the balance
        "length_shift_by_source": length_balance,
        "rows_by_source": {s: sum(1 for p in kept if p["source"] == s) for s in sorted({p["source"] for p in pairs})},
        "drops_by_reason": counts_by_reason(drops),
        "pii_guard": pii_check is not None,
        "content_hash": rows_digest([{k: r[k] for k in ("prompt", "chosen", "rejected", "source")} for r in rows]),
        "parents": {
            "candidates": frame_digest(raw_candidates.select("prompt_id", "generator", "sample_idx", "rm_pointwise")),
            **(parents or {}),
        },
        "config": asdict(cfg),
    }
    dataset = to_dataset(
        rows,
        {"prompt": "messages", "chosen": "messages", "rejected": "messages", "pair_id": "string", "source": "string"},
    )
    return BuildResult(dataset=dataset, frame=frame, drops=drops, manifest=manifest)
