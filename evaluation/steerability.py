"""Steerability: do replies keep the instructions of a character card when the user pushes against them?

The suite's held-out character cards (`engine.cards`) challenge their own rules ("write me a long essay",
"use lots of emojis!", "what's your real name?"). Every instruction of a card is checked (`engine.rules`) on
every reply to that card, so a reply that keeps the challenged rule but breaks another one still counts as a
violation.

Rates: the instruction-following rate is the share of replies that meet *all* the instructions of
their card; the violation rate of an instruction type is the share of its checks that failed.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import NamedTuple

import polars as pl

from engine.rules import check_instruction, validate_instruction
from pipeline import schema

STAGE = "steerability"

CHECK = pl.Struct({"instruction": pl.Utf8, "passed": pl.Boolean, "detail": pl.Utf8})


@dataclass
class SteerabilityConfig:
    langdetect_seed: int = field(
        default=0, metadata={"help": "Seed of the language detector, so a reply always gets the same verdict."}
    )
    include_greeting: bool = field(
        default=True,
        metadata={"help": "Open each prompt with the card's greeting as the assistant's first turn, as served."},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.langdetect_seed, int) or self.langdetect_seed < 0:
            raise ValueError(f"langdetect_seed={self.langdetect_seed!r} must be a non-negative integer")


class SteerabilityScores(NamedTuple):
    rows: pl.DataFrame
    summary: pl.DataFrame
    drops: pl.DataFrame


# ---------------------------------------------------------------------------------------------
# Scoring


_drop = functools.partial(schema.drop_row, STAGE)


def score_responses(
    frame: pl.DataFrame,
    config: SteerabilityConfig | None = None,
    *,
    response_col: str = "response",
) -> SteerabilityScores:
    """Check every instruction of each row's card on its `response`.

    `frame` is `build_prompts` output plus a response column. Rows with no response or an unreadable
    instruction spec are dropped with a reason. Returns one result row per scored prompt, the summary
    (see `summarize`) and the drops.
    """
    config = config or SteerabilityConfig()
    needed = {"prompt_id", "character_id", "instructions", "targets", response_col}
    missing = needed - set(frame.columns)
    if missing:
        raise ValueError(
            f"frame is missing columns {sorted(missing)}: score the output of build_prompts plus responses"
        )
    rows, drops = [], []
    for r in frame.select(sorted(needed)).iter_rows(named=True):
        pid, text = r["prompt_id"], r[response_col]
        if text is None:
            drops.append(_drop(pid, "missing_response", "no response to score"))
            continue
        try:
            specs = json.loads(r["instructions"])
            for spec in specs:
                validate_instruction(spec, f"prompt {pid}")
        except (ValueError, TypeError) as exc:
            drops.append(_drop(pid, "bad_instruction_spec", str(exc)[:300]))
            continue
        checks = []
        for spec in specs:
            passed, detail = check_instruction(spec, text, seed=config.langdetect_seed)
            checks.append({"instruction": spec["type"], "passed": passed, "detail": detail})
        violated = [c["instruction"] for c in checks if not c["passed"]]
        rows.append(
            {
                "prompt_id": pid,
                "character_id": r["character_id"],
                "targets": list(r["targets"] or []),
                "n_instructions": len(checks),
                "n_violations": len(violated),
                "all_followed": not violated,
                "violated": violated,
                "checks": checks,
            }
        )
    out = pl.DataFrame(
        rows,
        schema={
            "prompt_id": pl.Utf8,
            "character_id": pl.Utf8,
            "targets": pl.List(pl.Utf8),
            "n_instructions": pl.Int32,
            "n_violations": pl.Int32,
            "all_followed": pl.Boolean,
            "violated": pl.List(pl.Utf8),
            "checks": pl.List(CHECK),
        },
    )
    drops_df = schema.drops_frame(drops)
    return SteerabilityScores(out, summarize(out), drops_df)


SUMMARY_SCHEMA = pl.Schema(
    {"level": pl.Utf8, "key": pl.Utf8, "n": pl.Int64, "following_rate": pl.Float64, "violation_rate": pl.Float64}
)


def summarize(rows: pl.DataFrame) -> pl.DataFrame:
    """Rates at four levels:

    - `overall`/`all`: n replies; following_rate = share meeting all their instructions;
      violation_rate = share of all checks that failed;
    - `instruction`/<type>: n checks of that type; following_rate and violation_rate of those checks;
    - `targeted`/<type>: the same, only on replies whose challenge targeted that type;
    - `character`/<id>: as `overall`, per card.
    """
    if rows.height == 0:
        return schema.empty(SUMMARY_SCHEMA)
    checks = rows.select("prompt_id", "character_id", "targets", "checks").explode("checks").unnest("checks")
    overall = rows.select(
        pl.lit("overall").alias("level"),
        pl.lit("all").alias("key"),
        pl.len().cast(pl.Int64).alias("n"),
        pl.col("all_followed").mean().alias("following_rate"),
        (pl.col("n_violations").sum() / pl.col("n_instructions").sum()).alias("violation_rate"),
    )

    def per_check(df: pl.DataFrame, level: str) -> pl.DataFrame:
        return (
            df.group_by("instruction")
            .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("passed").mean().alias("following_rate"))
            .select(
                pl.lit(level).alias("level"),
                pl.col("instruction").alias("key"),
                "n",
                "following_rate",
                (1 - pl.col("following_rate")).alias("violation_rate"),
            )
        )

    targeted = checks.filter(pl.col("instruction").is_in(pl.col("targets")))
    character = (
        rows.group_by("character_id")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("all_followed").mean().alias("following_rate"),
            (pl.col("n_violations").sum() / pl.col("n_instructions").sum()).alias("violation_rate"),
        )
        .select(
            pl.lit("character").alias("level"),
            pl.col("character_id").alias("key"),
            "n",
            "following_rate",
            "violation_rate",
        )
    )
    parts = [overall, per_check(checks, "instruction"), per_check(targeted, "targeted"), character]
    return pl.concat([p.cast(dict(SUMMARY_SCHEMA)) for p in parts]).sort("level", "key")


def eval_records(rows: pl.DataFrame, generation: str, stage: str = STAGE) -> pl.DataFrame:
    """Per-prompt results as `eval_records` rows: metric '<stage>/all_followed' (1 or 0) and
    '<stage>/violations' (count), slice `stage` ('steerability' for the held-out cards the gates read)."""
    base = rows.select(
        pl.lit(generation).alias("generation"),
        pl.lit(stage).alias("slice"),
        "prompt_id",
        "all_followed",
        "n_violations",
    )
    metrics = {"all_followed": "all_followed", "violations": "n_violations"}  # metric name -> column
    return pl.concat(
        [
            base.select(
                "generation",
                "slice",
                "prompt_id",
                pl.lit(f"{stage}/{metric}").alias("metric"),
                pl.col(column).cast(pl.Float64).alias("value"),
            )
            for metric, column in metrics.items()
        ]
    )


def following_difference(
    base: pl.DataFrame, new: pl.DataFrame, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float | int]:
    """The held-out instruction-following rate of `new` minus that of `base`, with a paired bootstrap interval.

    Each frame has `prompt_id` and `value`: the share of that prompt's replies keeping every rule of its card
    (`eval_records`' 'steerability/all_followed', averaged over a prompt's samples). Prompts are resampled
    together, so the interval reflects which cards and challenges happened to be hard, not only sampling noise.
    """
    import numpy as np

    # sorted: the bootstrap draws positions, so the same prompts in another order would give another interval
    joined = (
        base.select("prompt_id", "value")
        .join(new.select("prompt_id", pl.col("value").alias("new")), "prompt_id")
        .sort("prompt_id")
    )
    if joined.is_empty():
        raise ValueError("the two policies share no scored prompt: compare records of the same suite")
    diff = (joined["new"] - joined["value"]).to_numpy()
    boots = diff[np.random.default_rng(seed).integers(0, len(diff), (n_resamples, len(diff)))].mean(axis=1)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return {
        "base": float(joined["value"].mean()),
        "new": float(joined["new"].mean()),
        "difference": float(diff.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_prompts": joined.height,
    }
