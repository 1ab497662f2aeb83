"""IFEval as a held-out check of a real model: which prompts are held out, and new against parent on them.

The IFEval prompts are split in two halves by a seeded draw of each prompt's normalised text
(`pipeline.seeded_uniform`): the held-out half is what the offline evaluation answers, and no training set may
contain it (the train/eval gate compares it, by normalised text, with every prompt a generation trained on); the
other half is open, for a user who wants instruction data. A prompt's half depends on its own text and the salt
alone, so re-keying or reordering the file, or adding prompts to it, moves no prompt from one half to the other.

Both policies answer the same held-out prompts, so the comparison is paired: `paired_differences` resamples the
prompts together (a prompt's instructions travel with it) for instruction-strict and prompt-strict accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from evaluation.release_gates import text_key
from pipeline.prompts import chat_messages
from pipeline.seeded_uniform import seeded_uniforms

HELDOUT, OPEN = "heldout", "open"
# the prompt ids the train/eval gate reports for an IFEval prompt
ID_PREFIX = "ifeval:"
METRICS = ("instruction_strict", "prompt_strict")
DIFFERENCE_SCHEMA = pl.Schema(
    {
        "metric": pl.Utf8,
        "parent": pl.Float64,
        "new": pl.Float64,
        "difference": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "n_prompts": pl.Int64,
        "n_instructions": pl.Int64,
    }
)


@dataclass
class IFEvalSplitConfig:
    heldout_fraction: float = field(
        default=0.5,
        metadata={"help": "Share of the IFEval prompts held out: answered in evaluation, never trained on."},
    )
    salt: str = field(
        default="ifeval-heldout-v1",
        metadata={
            "help": "Salt of the draw that splits the prompts; another salt is another split, so a history of "
            "generations compared on IFEval keeps one."
        },
    )

    def __post_init__(self) -> None:
        if not 0 < self.heldout_fraction <= 1:
            raise ValueError(f"ifeval_heldout_fraction={self.heldout_fraction} must be in (0, 1] (default 0.5)")
        if not self.salt:
            raise ValueError("ifeval_split_salt must not be empty (default 'ifeval-heldout-v1')")


def split_ifeval(inputs: pl.DataFrame, config: IFEvalSplitConfig | None = None) -> pl.DataFrame:
    """`inputs` (`evaluation.ifeval_files.read_inputs`) with `split` (held-out or open) and `draw`, the prompt's
    seeded uniform: the held-out prompts are those whose draw falls below the held-out fraction."""
    config = config or IFEvalSplitConfig()
    keys = inputs.select(text_key(pl.col("prompt")).alias("k"))["k"].to_list()
    draws = pl.Series("draw", seeded_uniforms(keys, config.salt))
    return inputs.with_columns(
        draws, pl.when(draws < config.heldout_fraction).then(pl.lit(HELDOUT)).otherwise(pl.lit(OPEN)).alias("split")
    )


def heldout_ifeval(inputs: pl.DataFrame, max_prompts: int, config: IFEvalSplitConfig | None = None) -> pl.DataFrame:
    """Up to `max_prompts` held-out prompts: those with the smallest draws, so a cap takes a seeded sample of
    the half rather than the file's first lines; in key order."""
    held = split_ifeval(inputs, config).filter(pl.col("split") == HELDOUT)
    return held.sort("draw", "key").head(max_prompts).sort("key").drop("split", "draw")


def chat_contexts(heldout: pl.DataFrame) -> list[list[dict]]:
    """Each prompt as a chat of one user turn, the way both policies are asked it."""
    return [chat_messages(None, [{"role": "user", "content": p}]) for p in heldout["prompt"]]


def eval_prompt_texts(heldout: pl.DataFrame) -> pl.DataFrame:
    """The held-out prompts as (prompt_id, text), the shape of the train/eval gate's eval prompts."""
    return heldout.select(
        (pl.lit(ID_PREFIX) + pl.col("key").cast(pl.Utf8)).alias("prompt_id"), pl.col("prompt").alias("text")
    )


def per_prompt(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per scored prompt (`IFEvalResult.rows`): key, instructions followed (strict), instructions,
    prompt followed (strict)."""
    return rows.select(
        "key",
        pl.col("follow_strict").list.eval(pl.element().cast(pl.Int64)).list.sum().alias("followed"),
        pl.col("follow_strict").list.len().cast(pl.Int64).alias("instructions"),
        pl.col("prompt_strict").cast(pl.Int64).alias("prompt_followed"),
    )


def paired_differences(
    parent_rows: pl.DataFrame, new_rows: pl.DataFrame, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> pl.DataFrame:
    """Instruction-strict and prompt-strict accuracy of both policies on the prompts both had scored, new -
    parent with a paired bootstrap interval over prompts (`DIFFERENCE_SCHEMA`). Instruction-strict is a ratio
    of sums (followed / instructions) in every resample, as the accuracy itself is; empty when no prompt is
    shared."""
    joined = (
        per_prompt(parent_rows)
        .join(per_prompt(new_rows), on="key", suffix="_new")
        .filter(pl.col("instructions") == pl.col("instructions_new"))
        .sort("key")  # the bootstrap draws positions: the same prompts in another order give the same interval
    )
    if joined.is_empty():
        return pl.DataFrame(schema=DIFFERENCE_SCHEMA)
    n = joined.height
    pos = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    inst = joined["instructions"].to_numpy().astype(np.float64)
    out = []
    for metric, (a, b, weight) in {
        "instruction_strict": ("followed", "followed_new", inst),
        "prompt_strict": ("prompt_followed", "prompt_followed_new", np.ones(n)),
    }.items():
        pa, pb = joined[a].to_numpy().astype(np.float64), joined[b].to_numpy().astype(np.float64)
        boots = (pb - pa)[pos].sum(axis=1) / weight[pos].sum(axis=1)
        low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
        out.append(
            {
                "metric": metric,
                "parent": float(pa.sum() / weight.sum()),
                "new": float(pb.sum() / weight.sum()),
                "difference": float((pb - pa).sum() / weight.sum()),
                "ci_low": float(low),
                "ci_high": float(high),
                "n_prompts": n,
                "n_instructions": int(inst.sum()),
            }
        )
    return pl.DataFrame(out, schema=DIFFERENCE_SCHEMA)
