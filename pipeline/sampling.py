"""Sample a diverse prompt pool and split it into train and held-out evaluation users.

Two ways to choose the pool, both retaining `retain_fraction` of the prompts (or `max_pool_size`):

- `cluster_balanced`: every cluster gets an equal share, capped by what it has; what a small
  cluster cannot fill goes to the others (water-filling), so rare topics are kept whole and
  frequent ones are thinned.
- `stratified`: target shares per dimension (e.g. `{"source": {"internal": 0.2, "external": 0.8}}`,
  several dimensions at once). The count of each cell (one combination of levels) is found by
  iterative proportional fitting (raking) of the available counts onto the target marginals, with
  every cell capped by what it holds. Raking keeps the association between dimensions that the
  data has, changing it as little as the targets allow (uncapped, it is the minimum-KL fit to the
  available counts). When the targets cannot be met at the requested size, by default
  (`on_shortfall="shrink"`) the pool shrinks until they can: the composition is the point of
  stratifying, so it wins over size. `on_shortfall="fill"` keeps the size instead and hands the
  shortfall of a scarce level to the other levels of its dimension. The report shows both.

Which rows fill a cell's count is decided by a seeded hash of `prompt_id`: deterministic and free
of row order, so a re-run gives the same pool. `sample_weight` is the inverse of the cell's
retention rate, for estimates that must speak for the whole traffic.

The pool is split into train and held-out users by `pipeline.user_split`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipeline import schema
from pipeline.cell_quotas import SHARE_TOL, effective_shares, integerize, rake, spread_shortfall, water_fill
from pipeline.seeded_uniform import seeded_uniforms
from pipeline.step import StepCounters, StepResult
from pipeline.user_split import SPLITS, assign_split

STAGE = "sampling"
NOT_SAMPLED = "not_sampled"
MISSING_PROMPT_ID = "missing_prompt_id"
MODES = ("cluster_balanced", "stratified")
_NULL = "(null)"
SHORTFALLS = ("shrink", "fill")

# achieved vs target shares: one row per level of each dimension, plus `pool` (sizes) and `split`
REPORT = pl.Schema(
    {
        "dimension": pl.Utf8,
        "value": pl.Utf8,
        "available": pl.Int64,
        "retained": pl.Int64,
        # as configured (null where the config says nothing about the level)
        "requested_share": pl.Float64,
        # what the allocation aimed at: requested shares completed and renormalised over the levels present
        "target_share": pl.Float64,
        "achieved_share": pl.Float64,
    }
)


@dataclass
class SamplingConfig:
    mode: str = field(
        default="cluster_balanced",
        metadata={
            "help": "How to choose the pool: `cluster_balanced` (equal share per cluster) or `stratified` "
            "(target shares per dimension, see `targets`)."
        },
    )
    retain_fraction: float = field(
        default=0.5,
        metadata={"help": "Fraction of the input prompts to keep in the pool (0 < f <= 1)."},
    )
    max_pool_size: int = field(
        default=0,
        metadata={"help": "Upper bound on the pool size whatever the fraction; 0 means no bound."},
    )
    targets: dict[str, dict[str, float]] = field(
        default_factory=dict,
        metadata={
            "help": "For `stratified`: {column: {value: share}}, e.g. {'source': {'internal': 0.2, "
            "'external': 0.8}}. Shares of a column sum to at most 1; if less, the rest goes to the "
            "unlisted values in proportion to their size. Write null values as '(null)'."
        },
    )
    on_shortfall: str = field(
        default="shrink",
        metadata={
            "help": "For `stratified`, when the data cannot meet the targets at the requested size: `shrink` "
            "keeps the shares and retains fewer prompts; `fill` keeps the size and gives the shortfall of a "
            "scarce value to the other values of its dimension."
        },
    )
    cluster_column: str = field(
        default="cluster_id",
        metadata={"help": "Column holding the topic cluster, for `cluster_balanced`."},
    )
    report_dimensions: tuple[str, ...] = field(
        default=("cluster_id", "character_id", "source"),
        metadata={"help": "Columns whose achieved shares the report lists (those absent are skipped)."},
    )
    seed: int = field(
        default=0,
        metadata={"help": "Seed of the per-prompt hash that picks rows inside a cell; same seed, same pool."},
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction of users held out for evaluation (0 <= f < 1), chosen by user hash."},
    )
    internal_eval_fraction: float = field(
        default=0.5,
        metadata={
            "help": "Fraction of internal users (staff testers, a small group) held out for the "
            "eval_internal slice; a larger share than `eval_fraction` keeps that slice big enough to "
            "compare with eval_user."
        },
    )
    split_salt: str = field(
        default="flywheel-split-v1",
        metadata={
            "help": "Salt of the user split. Changing it reshuffles every user between train and eval: "
            "only do so when starting a fresh evaluation history."
        },
    )
    max_rake_iterations: int = field(
        default=200,
        metadata={"help": "Iterations of proportional fitting per attempt in `stratified` mode."},
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is unknown: use one of {MODES}")
        if not 0.0 < self.retain_fraction <= 1.0:
            raise ValueError(f"retain_fraction={self.retain_fraction} must be in (0, 1]")
        if self.max_pool_size < 0:
            raise ValueError(f"max_pool_size={self.max_pool_size} is negative: use 0 for no bound")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction={self.eval_fraction} must be in [0, 1)")
        if not 0.0 <= self.internal_eval_fraction < 1.0:
            raise ValueError(f"internal_eval_fraction={self.internal_eval_fraction} must be in [0, 1)")
        if self.on_shortfall not in SHORTFALLS:
            raise ValueError(f"on_shortfall={self.on_shortfall!r} is unknown: use one of {SHORTFALLS}")
        if self.max_rake_iterations < 1:
            raise ValueError(f"max_rake_iterations={self.max_rake_iterations} must be at least 1")
        if self.mode != "stratified" and self.targets:
            raise ValueError(
                f"targets are used only by mode='stratified' (mode is {self.mode!r}): "
                "set mode='stratified' or drop the targets"
            )
        if self.mode == "stratified" and not self.targets:
            raise ValueError("mode='stratified' needs `targets`, e.g. {'source': {'internal': 0.2, 'external': 0.8}}")
        for dim, shares in self.targets.items():
            if not isinstance(shares, dict) or not shares:
                raise ValueError(f"targets[{dim!r}] must be a non-empty {{value: share}} mapping")
            if any(s < 0 for s in shares.values()):
                raise ValueError(f"targets[{dim!r}] has a negative share: shares must be >= 0")
            total = sum(shares.values())
            if total > 1 + SHARE_TOL:
                raise ValueError(f"targets[{dim!r}] shares sum to {total:.4f} > 1: scale them to sum to 1")


def _codes(column: pl.Series) -> tuple[np.ndarray, list[str]]:
    codes = column.rank("dense").to_numpy().astype(np.int64) - 1
    return codes, column.unique().sort().to_list()


def _cell_counts(
    cells: pl.DataFrame, keys: list[str], n: int, config: SamplingConfig
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Integer quota per cell and the effective target shares per dimension (level -> share)."""
    available = cells["_available"].to_numpy().astype(np.float64)
    if config.mode == "cluster_balanced":
        tiebreak = seeded_uniforms(cells["_cell"].to_list(), f"{config.seed}:cells")
        levels = cells[keys[0]].to_list()
        return water_fill(available.astype(np.int64), n, tiebreak), [{lvl: 1.0 / len(levels) for lvl in levels}]
    index, shares, names = [], [], []
    for key, wanted in zip(keys, config.targets.values()):
        codes, levels = _codes(cells[key])
        counts = np.bincount(codes, weights=available, minlength=len(levels))
        index.append(codes)
        names.append(levels)
        shares.append(effective_shares(levels, counts, wanted))
    effective = [dict(zip(lv, map(float, s))) for lv, s in zip(names, shares)]
    if any(s.sum() == 0 for s in shares) or n == 0:
        return np.zeros(len(available), dtype=np.int64), effective
    size = float(n)
    for _ in range(30):
        x, ratio = rake(available, index, shares, size, config.max_rake_iterations)
        if ratio >= 1 - 1e-6:
            break
        if config.on_shortfall == "fill":
            shares, changed = spread_shortfall(index, shares, x, size)
            if not changed:
                break
        else:
            size *= ratio * (1 - 1e-9)
    return integerize(x, available.astype(np.int64)), effective


def _report(
    pool: pl.DataFrame,
    population: pl.DataFrame,
    targets: dict[str, dict[str, float] | None],
    requested: dict[str, dict[str, float]],
    n_target: int,
) -> pl.DataFrame:
    """Available and retained counts with target and achieved shares per level of each dimension."""
    total = population.height
    rows = [
        {
            "dimension": "pool",
            "value": "all",
            "available": total,
            "retained": pool.height,
            "requested_share": n_target / max(total, 1),
            "target_share": n_target / max(total, 1),
            "achieved_share": pool.height / max(total, 1),
        }
    ]
    for dim, target in targets.items():
        asked = {str(k): float(v) for k, v in requested.get(dim, {}).items()}
        table = (
            population.group_by(dim)
            .len("available")
            .join(pool.group_by(dim).len("retained"), on=dim, how="left")
            .with_columns(pl.col("retained").fill_null(0))
            .sort(dim)
        )
        for lvl, a, r in table.select(dim, "available", "retained").iter_rows():
            rows.append(
                {
                    "dimension": dim,
                    "value": lvl,
                    "available": a,
                    "retained": r,
                    "requested_share": asked.get(lvl),
                    "target_share": None if target is None else target.get(lvl, 0.0),
                    "achieved_share": r / max(pool.height, 1),
                }
            )
        for lvl in sorted(set(asked) - set(table[dim].to_list())):
            rows.append(
                {
                    "dimension": dim,
                    "value": lvl,
                    "available": 0,
                    "retained": 0,
                    "requested_share": asked[lvl],
                    "target_share": 0.0,
                    "achieved_share": 0.0,
                }
            )
    for name in SPLITS:
        r = int((pool["split"] == name).sum())
        rows.append(
            {
                "dimension": "split",
                "value": name,
                "available": None,
                "retained": r,
                "requested_share": None,
                "target_share": None,
                "achieved_share": r / max(pool.height, 1),
            }
        )
    report = pl.DataFrame(rows, schema=REPORT)
    return report.with_columns((pl.col("available") / max(total, 1)).alias("available_share"))


def _cell_label(dims: list[str], keys: list[str]) -> pl.Expr:
    return pl.concat_str([pl.lit(f"{d}=") + pl.col(k) for d, k in zip(dims, keys)], separator=", ")


def sample_pool(
    prompts: pl.DataFrame, config: SamplingConfig | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Choose the pool from `prompts` (schema.PROMPTS plus the cluster column) and split it.

    Returns (pool, drops, report): the pool keeps the input columns, in input order, and adds
    `split` and `sample_weight`; drops (schema.DROPS) hold every other row (`not_sampled`, or
    `missing_prompt_id`), so pool + drops = input; the report lists per dimension the available
    and retained counts and the target and achieved shares (dimension `pool` holds the sizes and
    the retain fraction, `split` the split). In `cluster_balanced` mode a cluster's target is the
    equal share, which a cluster smaller than it cannot reach."""
    config = config or SamplingConfig()
    dims = [config.cluster_column] if config.mode == "cluster_balanced" else list(config.targets)
    missing = [c for c in ["prompt_id", "user_hash", "source", "day", *dims] if c not in prompts.columns]
    if missing:
        raise ValueError(f"prompts frame lacks the columns {missing} that sampling mode {config.mode!r} needs")
    # levels as strings: one code path whatever the dtype of a cluster id, and null is a level of its own
    keys = [f"_k{i}" for i in range(len(dims))]
    work = prompts.with_columns(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
        *[pl.col(d).cast(pl.Utf8).fill_null(_NULL).alias(k) for d, k in zip(dims, keys)],
    )
    bad = work.filter(pl.col("prompt_id").is_null())
    work = work.filter(pl.col("prompt_id").is_not_null())

    n_target = round(config.retain_fraction * work.height)
    if config.max_pool_size:
        n_target = min(n_target, config.max_pool_size)
    cells = (
        work.group_by(keys)
        .len("_available")
        .sort(keys)
        .with_columns(pl.concat_str(keys, separator="\x1f").alias("_cell"))
    )
    alloc, effective = np.zeros(0, np.int64), [{} for _ in dims]
    if work.height:
        alloc, effective = _cell_counts(cells, keys, n_target, config)
    cells = cells.with_columns(pl.Series("_quota", alloc, dtype=pl.Int64))

    # within a cell, the rows with the smallest seeded hash of their id fill its quota
    ranked = (
        work.with_columns(pl.Series("_key", seeded_uniforms(work["prompt_id"].to_list(), f"{config.seed}:rows")))
        .join(cells.select(*keys, "_available", "_quota"), on=keys, how="left")
        .sort(["_key", "prompt_id", "_row"])
        .with_columns((pl.int_range(pl.len()).over(keys) + 1).alias("_rank"))
        .sort("_row")
    )
    chosen = pl.col("_rank") <= pl.col("_quota")
    pool = ranked.filter(chosen)
    pool = pool.with_columns(
        assign_split(pool["user_hash"], pool["source"], config).alias("split"),
        (pl.col("_available") / pl.col("_quota")).alias("sample_weight"),
    )
    not_chosen = ranked.filter(~chosen).with_columns(
        pl.lit(NOT_SAMPLED).alias("reason_code"),
        pl.format("cell {} kept {} of {}", _cell_label(dims, keys), pl.col("_quota"), pl.col("_available")).alias(
            "detail"
        ),
    )
    bad = bad.with_columns(
        pl.lit(MISSING_PROMPT_ID).alias("reason_code"), pl.format("input row {}", pl.col("_row")).alias("detail")
    )
    drops = pl.concat(
        [d.select("day", "prompt_id", "reason_code", "detail") for d in (not_chosen, bad)], how="vertical_relaxed"
    )
    drops = schema.drops_of(drops, STAGE, "prompt_id", "reason_code", "detail")

    targets: dict[str, dict[str, float] | None] = dict(zip(dims, effective))
    for d in config.report_dimensions:
        if d in prompts.columns and d not in targets:
            targets[d] = None
    as_level = [pl.col(d).cast(pl.Utf8).fill_null(_NULL) for d in targets]
    report = _report(pool.select(*as_level, "split"), work.select(as_level), targets, config.targets, n_target)
    pool = pool.drop("_row", "_key", "_rank", "_available", "_quota", *keys)
    return pool, drops, report


@dataclass(frozen=True)
class SamplingCounters(StepCounters):
    train: int
    eval_internal: int
    eval_user: int


def sample_step(prompts: pl.DataFrame, config: SamplingConfig | None = None) -> StepResult[SamplingCounters]:
    """`sample_pool` as a curation step: the pool is kept, every other row dropped with its reason, and the
    shares per dimension are the `sampling_report` table."""
    pool, drops, report = sample_pool(prompts, config)
    splits = dict(pool.group_by("split").len().iter_rows()) if pool.height else {}
    counters = SamplingCounters(
        rows_in=prompts.height,
        rows_kept=pool.height,
        **{name: int(splits.get(name, 0)) for name in ("train", "eval_internal", "eval_user")},
    )
    return StepResult(pool, drops, counters, tables={"sampling_report": report})
