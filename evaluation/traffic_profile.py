"""What a generation's traffic offers each judge, counted before any model is trained.

Every judge learns from something the traffic must contain: the pairwise preference model from engagement pairs
(near-identical prompts of different conversations whose replies fared differently) or annotation pairs, the
pointwise engagement model from served replies after which the user went on *and* replies after which the user
stopped, the user simulator behind the A/B readout from the training users' turns, and the win-rate gates from
held-out users per slice. `traffic_profile` counts each against its minimum, so a user reads, before pre-training,
what this traffic can and cannot judge and how to add what is missing. A judge below its minimum is not trained
and reads as insufficient evidence (`training.rewards.judge_minimums`); only a traffic that trains no reward model
at all stops the generation, since nothing would rank the candidates the policy learns from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from evaluation.user_simulator import SIMULATOR_FIX, UserSimulatorConfig
from training.rewards.judge_minimums import PAIRWISE_FIX, POINTWISE_FIX, JudgeMinimums

PROFILE = pl.Schema(
    {
        "judge": pl.Utf8,
        "measure": pl.Utf8,
        "value": pl.Int64,
        # null: counted to inform, no minimum
        "minimum": pl.Int64,
        "enough": pl.Boolean,
        "consequence": pl.Utf8,
        "fix": pl.Utf8,
    }
)
REWARD_MODELS = ("pointwise", "pairwise")
SLICE_FIX = "widen the window (`window_days`) or let earlier days' held-out users pool in (`max_earlier_days`)"


@dataclass(frozen=True)
class TrafficCounts:
    """The counts a profile reads: pairs as the pairwise judge mines them, the pointwise judge's training labels,
    the simulator's training turns, held-out users per slice and the window pool's topics."""

    pairs: int
    held_out_pairs: int
    pointwise_labels: pl.Series
    simulator_turns: pl.DataFrame
    slice_users: Mapping[str, int]
    pool: pl.DataFrame


def _row(judge, measure, value, minimum=None, consequence="", fix="") -> dict:
    enough = None if minimum is None else bool(value >= minimum)
    return {
        "judge": judge,
        "measure": measure,
        "value": int(value),
        "minimum": minimum,
        "enough": enough,
        "consequence": consequence if enough is False else "",
        "fix": fix if enough is False else "",
    }


def traffic_profile(
    counts: TrafficCounts,
    minimums: JudgeMinimums,
    simulator: UserSimulatorConfig,
    min_slice_users: int,
    min_eval_pairs: int,
) -> pl.DataFrame:
    """One row per measure (`PROFILE`): its value, the minimum a judge needs (null: for information), whether the
    traffic has `enough`, what follows when not, and the fix."""
    rows = [
        _row(
            "pairwise",
            "preference pairs (engagement + annotation)",
            counts.pairs,
            minimums.min_pairs,
            "the pairwise judge is not trained: insufficient evidence in its gates",
            PAIRWISE_FIX,
        ),
        _row(
            "pairwise",
            "held-out users' pairs",
            counts.held_out_pairs,
            min_eval_pairs,
            "validated by cross-validation of its training pairs instead",
            "more held-out users in the window (`window_days`)",
        ),
    ]
    labels = counts.pointwise_labels.drop_nulls().cast(pl.Boolean)
    went_on = int(labels.sum())
    not_trained = "the pointwise judge is not trained: the pairwise judge's utility trains the policy"
    rows += [
        _row("pointwise", "labelled replies", labels.len(), minimums.min_pointwise_rows, not_trained, POINTWISE_FIX),
        _row(
            "pointwise",
            "replies after which the user went on",
            went_on,
            minimums.min_pointwise_per_class,
            not_trained,
            POINTWISE_FIX,
        ),
        _row(
            "pointwise",
            "replies after which the user stopped",
            labels.len() - went_on,
            minimums.min_pointwise_per_class,
            not_trained,
            POINTWISE_FIX,
        ),
    ]
    turns = counts.simulator_turns.filter(
        pl.col("continued").is_not_null() & pl.col("reply").is_not_null() & pl.col("user_hash").is_not_null()
    )
    stayed = int(turns["continued"].cast(pl.Boolean).sum()) if turns.height else 0
    no_readout = "no user simulator: the A/B readout is insufficient evidence"
    rows += [
        _row("simulator", "usable turns", turns.height, simulator.min_rows, no_readout, SIMULATOR_FIX),
        _row(
            "simulator",
            "turns after which the user stopped",
            turns.height - stayed,
            simulator.min_per_class,
            no_readout,
            SIMULATOR_FIX,
        ),
        _row(
            "simulator",
            "training users",
            turns["user_hash"].n_unique() if turns.height else 0,
            simulator.min_users,
            "the A/B readout is insufficient evidence (it neither ships nor rejects)",
            SIMULATOR_FIX,
        ),
    ]
    for name, users in sorted(counts.slice_users.items()):
        rows.append(
            _row(
                "win-rate gates",
                f"{name} users",
                users,
                min_slice_users,
                f"{name} does not count in the win-rate gates",
                SLICE_FIX,
            )
        )
    rows += _informational(counts.pool)
    return pl.DataFrame(rows, schema=PROFILE)


def _informational(pool: pl.DataFrame) -> list[dict]:
    """Counts without a minimum: thumbs and the window pool's topic sizes."""
    out = []
    if "thumbs" in pool.columns:
        thumbs = pool["thumbs"].drop_nulls()
        out += [
            _row("pointwise", "thumbs up in the window pool", int((thumbs > 0).sum())),
            _row("pointwise", "thumbs down in the window pool", int((thumbs < 0).sum())),
        ]
    if "cluster_id" in pool.columns and pool.height:
        sizes = pool.group_by("cluster_id").len()["len"]
        out += [
            _row("candidates", "topics in the window pool", sizes.len()),
            _row("candidates", "prompts in the smallest topic", int(sizes.min())),
            _row("candidates", "prompts in the largest topic", int(sizes.max())),
        ]
    out.append(_row("candidates", "prompts in the window pool", pool.height))
    return out


def lacking(profile: pl.DataFrame) -> dict[str, list[str]]:
    """Per judge, the measures below their minimum (judges with everything they need are absent)."""
    # null (no minimum) is not short
    short = profile.filter(pl.col("enough").not_().fill_null(False))
    return {j: g["measure"].to_list() for (j,), g in short.group_by("judge", maintain_order=True)}


def reward_models_lacking_data(profile: pl.DataFrame) -> list[str]:
    """The reward models the traffic cannot train (a held-out shortfall only changes how a judge is validated)."""
    trained_on = {"pairwise": ("preference pairs",), "pointwise": ("labelled replies", "replies after which")}
    short = profile.filter(pl.col("enough").not_().fill_null(False))
    out = []
    for judge in REWARD_MODELS:
        measures = short.filter(pl.col("judge") == judge)["measure"].to_list()
        if any(m.startswith(trained_on[judge]) for m in measures):
            out.append(judge)
    return out


def summary(profile: pl.DataFrame) -> str:
    """One line: what the traffic can and cannot judge."""
    short = lacking(profile)
    if not short:
        return "the traffic offers every judge and gate its minimum"
    parts = []
    for judge, measures in short.items():
        rows = profile.filter((pl.col("judge") == judge) & pl.col("measure").is_in(measures))
        parts.append(
            f"{judge}: "
            + ", ".join(f"{r['value']} {r['measure']} (minimum {r['minimum']})" for r in rows.iter_rows(named=True))
        )
    return "below minimum: " + "; ".join(parts)
