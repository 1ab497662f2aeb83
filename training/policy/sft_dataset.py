"""The SFT mixture of one generation (rejection sampling): the best-scoring candidate per prompt that clears a
score floor, the style guards and the PII guard, mixed with character-card targets, engaged served replies and
annotation rewrites at configured ratios.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import polars as pl

from engine.style import StyleGuards
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
    check_fraction,
    check_length_balance,
    prompt_context,
    prompt_index,
    rule_checked,
    style_guards,
    without_length_trend,
)
from training.policy.steer_data import REPAIRED
from training.rewards.length_bias import balance_lengths, balanced_order, relative_difference

SFT_SOURCES = ("rejection_sampled", "steerability", "repaired", "served_engaged", "rewrite")


# ---------------------------------------------------------------------------------------------------------------
# SFT mixture


@dataclass
class SFTBuildConfig:
    min_score: float | None = field(
        default=None, metadata={"help": "Absolute floor on rm_pointwise; None uses `min_score_quantile`."}
    )
    min_score_quantile: float = field(
        default=0.25, metadata={"help": "Floor = this quantile of all candidate scores, when `min_score` is None."}
    )
    guards: StyleGuards = field(default_factory=StyleGuards, metadata={"help": "Length/emoji/list bounds."})
    served_min_depth: int = field(
        default=2,
        metadata={
            "help": "A served reply is engaged when the user continued and the conversation "
            "went on for at least this many turns after it (and no thumbs-down)."
        },
    )
    # Rule-keeping card replies are the scarcest source (a few dozen per generation early on) and the one the
    # held-out instruction-following rate moves with, so they get half the mix; the other sources fill the rest.
    # Repaired card replies (training.policy.steer_data.with_repairs) are a source of their own: mixed into the
    # sampled rule-keepers they displaced them, and the rule the policy was learning from those was learnt less.
    mix: dict[str, float] = field(
        default_factory=lambda: {
            "steerability": 0.5,
            "repaired": 0.15,
            "rejection_sampled": 0.2,
            "served_engaged": 0.1,
            "rewrite": 0.05,
        },
        metadata={
            "help": f"Target share of each source in {SFT_SOURCES}. Shares are met exactly among sources "
            "that have rows (surplus rows dropped as mix_ratio_cap); empty sources are left out."
        },
    )
    max_examples: int | None = field(default=None, metadata={"help": "Cap on the mixture size."})
    size: int | None = field(
        default=None,
        metadata={
            "help": "Rows of the mixture. None: the largest mixture the sources allow without repeating a row, so "
            "the scarcest source bounds every other. A number (e.g. the examples SFT will see, steps x batch): each "
            "source fills its share of it with distinct rows, and a source with too few repeats them as extra "
            "epochs (row ids suffixed #r1, #r2, ...), so the abundant sources are not thinned to the scarce one's "
            "size. `max_examples` still caps it."
        },
    )
    length_neutral: bool = field(
        default=True,
        metadata={
            "help": "Rank candidates by the reward minus its within-prompt length trend (fitted on these candidates, "
            "see training.rewards.length_bias), so rejection sampling keeps what the reward model likes besides "
            "length; the trend is in the manifest. False ranks by the raw score."
        },
    )
    steer_per_prompt: int = field(
        default=4,
        metadata={
            "help": "Distinct rule-keeping replies kept per training-card prompt and source (`steerability`, "
            "sampled; `repaired`, brought to keep rules of form); such prompts are rare successes early on, so "
            "more than the single best one is kept."
        },
    )
    length_balance: float | None = field(
        default=0.05,
        metadata={
            "help": "Each source's mean length in characters must lie within this relative difference of its "
            "references' (the mean over each row's prompt of the candidates, i.e. what the policy being trained "
            "already writes there); the rows "
            "that pull it furthest are left out as length_balance (training.rewards.length_bias.balance_shifts), so "
            "SFT does not move reply length. None keeps every row."
        },
    )
    # A card's rules set the length of a reply that keeps them (9 of the 13 training cards bound it), so trimming
    # its shortest rule-keepers teaches the rules less, not the length less: measured (`make bench-robustness`),
    # it halved that source, seed 0's one-generation held-out gain was +0.085 with it against +0.165 without,
    # and gen-1's replies shortened about as much either way (most of that is replies no longer cut off).
    length_balance_exempt: tuple[str, ...] = field(
        default=("steerability", "repaired"),
        metadata={"help": f"Sources of {SFT_SOURCES} the length balance leaves as they are."},
    )
    train_splits: tuple[str, ...] = field(
        default=("train",), metadata={"help": "Prompt splits that may be trained on (when prompts have `split`)."}
    )

    def __post_init__(self) -> None:
        self.guards = style_guards(self.guards)
        self.length_balance_exempt = tuple(self.length_balance_exempt)
        if set(self.length_balance_exempt) - set(SFT_SOURCES):
            raise ValueError(f"length_balance_exempt={self.length_balance_exempt} names sources not in {SFT_SOURCES}")
        check_length_balance(self.length_balance)
        self.train_splits = tuple(self.train_splits)
        check_fraction("min_score_quantile", self.min_score_quantile)
        unknown = set(self.mix) - set(SFT_SOURCES)
        if unknown:
            raise ValueError(f"mix has unknown sources {sorted(unknown)}; use keys from {SFT_SOURCES}")
        if any(v < 0 for v in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError(f"mix={self.mix} needs non-negative shares with a positive sum")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples={self.max_examples} must be >= 1 or None")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size={self.size} must be >= 1, or None for the largest mixture without repeats")
        if self.steer_per_prompt < 1:
            raise ValueError(f"steer_per_prompt={self.steer_per_prompt} must be >= 1; set it e.g. to 2")


def _epochs(rows: list[dict], n: int) -> list[dict]:
    """`n` rows: the first ones, or all of them and then again as further epochs (ids suffixed #r1, #r2, ...)."""
    out, epoch = list(rows[:n]), 1
    while len(out) < n:
        out += [dict(r, row_id=f"{r['row_id']}#r{epoch}") for r in rows[: n - len(out)]]
        epoch += 1
    return out


def _mix(pools: dict[str, list[dict]], shares: dict[str, float], cap: int | None, size: int | None = None):
    """Rows per source that meet the shares exactly; the surplus becomes drops. Without `size`, the mixture is
    as large as what is available allows; with it, a scarce source repeats its rows to fill its share."""
    live = {s: shares.get(s, 0.0) for s in pools if pools[s] and shares.get(s, 0.0) > 0}
    targets = {s: v / sum(live.values()) for s, v in live.items()} if live else {}
    repeat = size is not None
    if size is None:
        size = int(min((len(pools[s]) / share for s, share in targets.items()), default=0))
    size = min(size, cap) if cap else size
    kept, surplus = {}, []
    for source, rows in pools.items():
        n = round(size * targets[source]) if source in targets else 0
        kept[source] = _epochs(rows, n if repeat else min(n, len(rows)))
        reason = "mix_ratio_cap" if source in targets else "source_not_in_mix"
        surplus += [dict(r, reason_code=reason) for r in rows[n:]]
    return kept, targets, surplus


def _candidate_reason(cand: dict, prompt: dict | None, floor: float, guards, pii_check, split_dropped) -> str | None:
    """Why a candidate cannot be a training target (a drop reason), or None when it can."""
    if prompt is None:
        return "not_train_split" if cand["prompt_id"] in split_dropped else "unknown_prompt"
    if cand["rm_pointwise"] is None:
        return "no_score"
    # a reply to a character card must keep every rule of the card, whatever the reward model thinks of it
    if prompt.get("instructions") and not cand.get("rules_kept"):
        return "breaks_instructions"
    # a reply run into the token limit stops mid-sentence: as a target it would teach ending there
    if cand.get("ended") is False:
        return "cut_off"
    if cand["rm_pointwise"] < floor:
        return "below_score_floor"
    return guards.reason(cand["text"], pii_check)


def _rejection_sample(candidates, by_id, split_dropped, floor, cfg, pii_check, pools, drop_rows) -> None:
    """Per prompt, candidates best-first: the first that clears floor and guards is kept (on a character card's
    prompt, up to `steer_per_prompt` distinct replies that also keep every rule); the rest are not_best."""
    ordered = candidates.sort(
        ["prompt_id", "rm_pointwise", "generator", "sample_idx"],
        descending=[False, True, False, False],
        nulls_last=True,
    )
    for (pid,), group in ordered.group_by("prompt_id", maintain_order=True):
        prompt = by_id.get(pid)
        day = prompt["day"] if prompt else None
        steer = bool(prompt and prompt.get("instructions"))
        wanted = cfg.steer_per_prompt if steer else 1
        kept_ids: dict[str, list[str]] = {}
        kept_texts: set[str] = set()
        for cand in group.iter_rows(named=True):
            cid = f"{pid}/{cand['generator']}/{cand['sample_idx']}"
            source = "rejection_sampled"
            if steer:
                source = "repaired" if cand["generator"].endswith(REPAIRED) else "steerability"
            pool, kept = pools[source], kept_ids.setdefault(source, [])
            if len(kept) >= wanted or (cand["text"] in kept_texts and prompt is not None):
                first = kept[0] if kept else next(ids[0] for ids in kept_ids.values() if ids)
                drop_rows.append({"day": day, "row_id": cid, "reason_code": "not_best", "kept_id": first})
                continue
            reason = _candidate_reason(cand, prompt, floor, cfg.guards, pii_check, split_dropped)
            if reason is None:
                kept.append(cid)
                kept_texts.add(cand["text"])
                pool.append(
                    {
                        "prompt_id": pid,
                        "response": cand["text"],
                        "row_id": cid,
                        "rank": -cand["rm_pointwise"],
                        "day": day,
                    }
                )
            else:
                drop_rows.append({"day": day, "row_id": cid, "reason_code": reason})


def _length_reference(candidates: pl.DataFrame, by_id: dict[str, dict]):
    """A row's reference length: the mean characters of what the policy being trained writes for its prompt (its
    candidates there that ended on their own, all of them when none did), or, for a prompt without candidates,
    of those on every prompt of the same kind (card or traffic). The artifact gate compares the lengths of the
    replies that ended, so the cut-off ones, run into the token limit, do not count."""
    ended = pl.col("ended").fill_null(True) if "ended" in candidates.columns else pl.lit(True)
    chars = candidates.with_columns(
        pl.col("text").fill_null("").str.len_chars().cast(pl.Float64).alias("_chars"), ended.alias("_ended")
    )
    per_prompt = dict(
        chars.group_by("prompt_id")
        .agg(pl.col("_chars").filter(pl.col("_ended")).mean().fill_null(pl.col("_chars").mean()))
        .iter_rows()
    )
    card_ids = [pid for pid, p in by_id.items() if p.get("instructions")]
    is_card = pl.col("prompt_id").is_in(card_ids)
    ended_chars = chars.filter(pl.col("_ended"))
    card_all = ended_chars.filter(is_card)["_chars"].mean() if card_ids else None
    traffic_all = ended_chars.filter(~is_card)["_chars"].mean()

    def reference(row: dict) -> float | None:
        fallback = card_all if by_id.get(row["prompt_id"], {}).get("instructions") else traffic_all
        ref = per_prompt.get(row["prompt_id"])
        ref = ref if ref is not None and ref > 0 else fallback
        return float(ref) if ref is not None and ref > 0 else None

    return reference


def _lengths(rows: list[dict], reference) -> tuple[list[float], list[float]] | None:
    """The rows' lengths and references; None when a row has no reference."""
    refs = [reference(r) for r in rows]
    if not rows or None in refs:
        return None
    return [float(len(r["response"] or "")) for r in rows], refs


def _balance_pools(pools: dict[str, list[dict]], reference, cfg: SFTBuildConfig, drop_rows: list[dict]) -> dict:
    """Per source (rows best-first): leave out the rows that pull its mean length more than `length_balance`
    (relative) from its references' (length_balance drops), then order the rest so that the first rows the mixture
    keeps are balanced too; returns each source's relative difference before and after."""
    report: dict[str, dict] = {}
    for source, rows in pools.items():
        measured = _lengths(rows, reference)
        if measured is None:
            continue
        exempt = source in cfg.length_balance_exempt
        out, shifts, report[source] = balance_lengths(*measured, cfg.length_balance, exempt)
        for i in sorted(out):
            r = rows[i]
            drop_rows.append(
                {
                    "day": r["day"],
                    "row_id": r["row_id"],
                    "reason_code": "length_balance",
                    "detail": f"shift={shifts[i]:+.3f}",
                }
            )
        kept = [i for i in range(len(rows)) if i not in out]
        if cfg.length_balance is not None and not exempt:
            kept = [kept[k] for k in balanced_order([shifts[i] for i in kept], cfg.length_balance)]
        pools[source] = [rows[i] for i in kept]
    return report


def build_sft_dataset(
    prompts: pl.DataFrame,
    candidates: pl.DataFrame,
    cfg: SFTBuildConfig | None = None,
    *,
    rewrites: pl.DataFrame | None = None,
    pii_check: PiiCheck | None = None,
    parents: dict[str, str] | None = None,
) -> BuildResult:
    """The SFT mixture as a conversational dataset: `messages`, `source`, `prompt_id`.

    `rewrites` (annotations, e.g. training.rewards.annotation_set.REWRITES) has `prompt_id` and `rewrite` (or `text`): a
    better reply written for that prompt; its own `prompt` messages are used when the prompt_id is not among
    `prompts`. `pii_check(text)` returns True when the text holds personal data (`privacy_pii_check()` builds
    one on `pipeline.privacy`); such rows are dropped with reason `pii`. `parents` (name -> hash) is added to
    the manifest's lineage.
    """
    cfg = cfg or SFTBuildConfig()
    stage = "sft_data"
    prompts, drop_rows = split_filter(prompts, cfg.train_splits)
    candidates = rule_checked(prompts, candidates)
    raw_candidates = candidates  # lineage hashes the scores as the reward model gave them
    card_ids = (
        prompts.filter(pl.col("instructions").is_not_null())["prompt_id"] if "instructions" in prompts.columns else []
    )
    candidates, length_trend = without_length_trend(candidates, cfg.length_neutral, card_ids)
    split_dropped = {r["row_id"] for r in drop_rows}
    by_id = prompt_index(prompts)
    pools: dict[str, list[dict]] = {s: [] for s in SFT_SOURCES}

    scores = candidates["rm_pointwise"].drop_nulls()
    floor = cfg.min_score
    if floor is None:
        floor = float(scores.quantile(cfg.min_score_quantile)) if len(scores) else 0.0
    _rejection_sample(candidates, by_id, split_dropped, floor, cfg, pii_check, pools, drop_rows)

    for p in by_id.values():
        if p.get("instructions"):
            continue  # a character card's prompt has no served reply: it is not traffic
        rid = f"{p['prompt_id']}/served"
        engaged = (
            bool(p.get("continued"))
            and (p.get("depth_after") or 0) >= cfg.served_min_depth
            and (p.get("thumbs") is None or p["thumbs"] >= 0)
        )
        reason = cfg.guards.reason(p.get("served_response"), pii_check) if engaged else "low_engagement"
        if reason:
            drop_rows.append({"day": p["day"], "row_id": rid, "reason_code": reason})
        else:
            pools["served_engaged"].append(
                {
                    "prompt_id": p["prompt_id"],
                    "response": p["served_response"],
                    "row_id": rid,
                    "rank": -(p.get("depth_after") or 0),
                    "day": p["day"],
                }
            )

    text_col = "rewrite" if rewrites is not None and "rewrite" in rewrites.columns else "text"
    for i, r in enumerate(rewrites.iter_rows(named=True) if rewrites is not None else []):
        rid = f"{r['prompt_id']}/rewrite/{i}"
        p = by_id.get(r["prompt_id"])
        # An annotation carries its own prompt when it was written for a conversation outside this window.
        context = prompt_context(p) if p else [dict(m) for m in (r.get("prompt") or [])]
        if r["prompt_id"] in split_dropped:
            reason = "not_train_split"
        elif not context:
            reason = "unknown_prompt"
        elif context[-1]["role"] != "user":
            reason = "bad_prompt"
        else:
            reason = cfg.guards.reason(r.get(text_col), pii_check)
        day = p["day"] if p else r.get("day")
        if reason:
            drop_rows.append({"day": day, "row_id": rid, "reason_code": reason})
        else:
            pools["rewrite"].append(
                {
                    "prompt_id": r["prompt_id"],
                    "response": r[text_col],
                    "row_id": rid,
                    "rank": i,
                    "day": day,
                    "context": context,
                }
            )

    for rows in pools.values():
        rows.sort(key=lambda r: (r["rank"], r["row_id"]))
    reference = _length_reference(candidates, by_id)
    length_balance = _balance_pools(pools, reference, cfg, drop_rows)
    kept, targets, surplus = _mix(pools, cfg.mix, cfg.max_examples, cfg.size)
    drop_rows += surplus
    for source, rows in kept.items():
        measured = _lengths(rows, reference)
        if source in length_balance and measured is not None:
            length_balance[source]["kept"] = relative_difference(*measured)
    rows = sorted(
        (
            {
                "messages": (r.get("context") or prompt_context(by_id[r["prompt_id"]]))
                + [{"role": "assistant", "content": r["response"]}],
                "source": source,
                "prompt_id": r["prompt_id"],
                "row_id": r["row_id"],
            }
            for source in SFT_SOURCES
            for r in kept[source]
        ),
        key=lambda r: r["row_id"],
    )
    drops = schema.drops_frame(drop_rows, stage)
    total = len(rows)
    manifest = {
        "kind": "sft",
        "rows": total,
        "score_floor": floor,
        "rows_by_source": {s: len(kept[s]) for s in SFT_SOURCES},
        # rows beyond a source's distinct ones: its extra epochs when `size` asks for more than it has
        "repeated_by_source": {s: max(0, len(kept[s]) - len(pools[s])) for s in SFT_SOURCES},
        "available_by_source": {s: len(pools[s]) for s in SFT_SOURCES},
        "ratios_target": targets,
        "ratios_achieved": {s: (len(kept[s]) / total if total else 0.0) for s in SFT_SOURCES},
        "missing_sources": [s for s, v in cfg.mix.items() if v > 0 and not pools[s]],
        "length_trend": length_trend,
        # per source: relative difference of its rows' mean characters from their references' (their prompts'
        # candidates), before and after the balance, and of the rows the mixture kept
        "length_shift_by_source": length_balance,
        "drops_by_reason": counts_by_reason(drops),
        "pii_guard": pii_check is not None,
        "content_hash": rows_digest([{k: r[k] for k in ("messages", "source", "prompt_id")} for r in rows]),
        "parents": {
            "prompts": frame_digest(prompts.select("prompt_id")),
            "candidates": frame_digest(raw_candidates.select("prompt_id", "generator", "sample_idx", "rm_pointwise")),
            **(parents or {}),
        },
        "config": asdict(cfg),
    }
    dataset = to_dataset(rows, {"messages": "messages", "source": "string", "prompt_id": "string"})
    frame = pl.DataFrame(
        [{k: r[k] for k in ("row_id", "prompt_id", "source")} for r in rows] or None,
        schema={"row_id": pl.Utf8, "prompt_id": pl.Utf8, "source": pl.Utf8},
    )
    return BuildResult(dataset=dataset, frame=frame, drops=drops, manifest=manifest)
