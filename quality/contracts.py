"""Contract checks that expectation suites express poorly, in plain polars.

- the nested chat structure of `prompts.history` (roles alternate, the last turn is the user's,
  no empty content, `last_user` is that last turn);
- train/eval splits disjoint by user (a user's traffic is either trained on or evaluated on);
- conservation across a filtering stage (rows in = rows out + rows dropped with a reason);
- ingest conservation (records read = accepted + quarantined).

Each check returns a `CheckOutcome` with counters in `metadata` and a few offending rows in
`examples`; none raises on bad data.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from quality.outcomes import CRITICAL, CheckOutcome

__all__ = [
    "CheckOutcome",
    "check_ingest_conservation",
    "check_ingest_stats",
    "check_prompt_history",
    "check_split_disjoint",
    "check_stage_conservation",
    "history_violations",
]

VIOLATIONS = pl.Schema({"row_id": pl.Utf8, "reason_code": pl.Utf8, "detail": pl.Utf8})


def history_violations(
    prompts: pl.DataFrame,
    *,
    id_column: str = "prompt_id",
    allowed_roles: Sequence[str] = ("user", "assistant"),
) -> pl.DataFrame:
    """One row per structural fault of a prompt's history: row_id, reason_code, detail.

    Reason codes: empty_history, bad_role, repeated_role (two consecutive turns of one role),
    empty_content, last_not_user (the turn before the served response is not a user turn),
    last_user_mismatch (`last_user` differs from the last turn's content).
    """
    if "history" not in prompts.columns or id_column not in prompts.columns:
        raise ValueError(f"prompts need the columns 'history' and {id_column!r}; got {prompts.columns}")
    extra = [c for c in ("last_user",) if c in prompts.columns]
    base = prompts.select(pl.col(id_column).cast(pl.Utf8).alias("row_id"), "history", *extra).with_row_index("_row")
    n_turns = pl.col("history").list.len()
    empty = base.filter(pl.col("history").is_null() | (n_turns == 0)).select(
        "_row", "row_id", reason_code=pl.lit("empty_history"), detail=pl.lit("history has no turns")
    )
    turns = (
        base.filter(n_turns > 0)
        .explode("history")
        .with_columns(
            role=pl.col("history").struct.field("role"),
            content=pl.col("history").struct.field("content"),
            pos=pl.int_range(pl.len()).over("_row"),
            n=pl.len().over("_row"),
        )
        .with_columns(prev_role=pl.col("role").shift(1).over("_row"))
    )
    is_last = pl.col("pos") == pl.col("n") - 1
    rules: list[tuple[str, pl.Expr, pl.Expr]] = [
        (
            "bad_role",
            pl.col("role").is_null() | ~pl.col("role").is_in(list(allowed_roles)),
            pl.format("turn {} has role '{}'", "pos", pl.col("role").fill_null("null")),
        ),
        (
            "repeated_role",
            pl.col("role") == pl.col("prev_role"),
            pl.format("turns {} and {} are both '{}'", pl.col("pos") - 1, "pos", "role"),
        ),
        (
            "empty_content",
            pl.col("content").is_null() | (pl.col("content").str.strip_chars() == ""),
            pl.format("turn {} ({}) has no content", "pos", pl.col("role").fill_null("null")),
        ),
        (
            "last_not_user",
            is_last & (pl.col("role").fill_null("") != "user"),
            pl.format("the turn before the served response is '{}', not 'user'", pl.col("role").fill_null("null")),
        ),
    ]
    if "last_user" in extra:
        rules.append(
            (
                "last_user_mismatch",
                is_last & (pl.col("content") != pl.col("last_user")).fill_null(True),
                pl.lit("last_user differs from the content of the last history turn"),
            )
        )
    parts = [empty] + [
        turns.filter(cond.fill_null(False)).select("_row", "row_id", reason_code=pl.lit(code), detail=detail)
        for code, cond, detail in rules
    ]
    return pl.concat(parts).sort("_row", maintain_order=True).drop("_row").cast(dict(VIOLATIONS))


def check_prompt_history(
    prompts: pl.DataFrame,
    *,
    id_column: str = "prompt_id",
    allowed_roles: Sequence[str] = ("user", "assistant"),
    example_count: int = 5,
) -> CheckOutcome:
    """Every prompt history alternates roles, ends with a user turn, and has no empty turn."""
    name = "prompt_history_structure"
    try:
        v = history_violations(prompts, id_column=id_column, allowed_roles=allowed_roles)
    except ValueError as e:
        return CheckOutcome(name, False, str(e), {"rows_checked": prompts.height})
    by_reason = dict(v.group_by("reason_code").len().sort("len", descending=True).iter_rows())
    bad_rows = v["row_id"].n_unique()
    detail = (
        f"all {prompts.height} prompt histories are well-formed"
        if v.is_empty()
        else f"{bad_rows} of {prompts.height} prompts have malformed histories: "
        + ", ".join(f"{k}={n}" for k, n in by_reason.items())
    )
    return CheckOutcome(
        name,
        passed=v.is_empty(),
        detail=detail,
        metadata={"rows_checked": prompts.height, "rows_failed": bad_rows, "violations_by_reason": by_reason},
        examples=v.head(example_count).to_dicts(),
    )


def check_split_disjoint(
    prompts: pl.DataFrame,
    *,
    split_column: str = "split",
    user_column: str = "user_hash",
    example_count: int = 5,
) -> CheckOutcome:
    """No user is on both the training side and an evaluation side, so evaluation never sees a user
    that training saw. Eval splits (`eval_*`) form one side: a user held out for evaluation may
    appear in several of its slices (e.g. internal and user traffic)."""
    name = "splits_disjoint_by_user"
    missing = [c for c in (split_column, user_column) if c not in prompts.columns]
    if missing:
        return CheckOutcome(name, False, f"cannot check: columns {missing} are missing", {"rows": prompts.height})
    pairs = prompts.select(pl.col(user_column).alias("user"), pl.col(split_column).alias("split"))
    unassigned = pairs.filter(pl.col("user").is_null() | pl.col("split").is_null()).height
    pairs = pairs.drop_nulls().unique()
    users_per_split = dict(pairs.group_by("split").len().sort("split").iter_rows())
    side = pl.when(pl.col("split").str.starts_with("eval")).then(pl.lit("eval")).otherwise(pl.col("split"))
    shared = (
        pairs.with_columns(side=side)
        .group_by("user")
        .agg(splits=pl.col("split").unique().sort(), sides=pl.col("side").n_unique())
        .filter(pl.col("sides") > 1)
        .sort("user")
    )
    overlaps: dict[str, int] = {}
    for splits in shared["splits"].to_list():
        for i, a in enumerate(splits):
            for b in splits[i + 1 :]:
                overlaps[f"{a} & {b}"] = overlaps.get(f"{a} & {b}", 0) + 1
    rows_affected = prompts.filter(pl.col(user_column).is_in(shared["user"].implode())).height if shared.height else 0
    detail = (
        f"{pairs['user'].n_unique()} users, each in one split"
        if shared.is_empty()
        else f"{shared.height} {'user appears' if shared.height == 1 else 'users appear'} in several splits "
        f"({rows_affected} rows): " + ", ".join(f"{k}: {n}" for k, n in overlaps.items())
    )
    return CheckOutcome(
        name,
        passed=shared.is_empty(),
        detail=detail,
        metadata={
            "users_per_split": users_per_split,
            "users_in_several_splits": shared.height,
            "rows_affected": rows_affected,
            "overlaps": overlaps,
            "rows_without_split_or_user": unassigned,
        },
        examples=[{"user_hash": u, "splits": s} for u, s, _ in shared.head(example_count).iter_rows()],
    )


def _count(x: int | pl.DataFrame | pl.LazyFrame) -> int:
    if isinstance(x, pl.LazyFrame):
        return int(x.select(pl.len()).collect().item())
    if isinstance(x, pl.DataFrame):
        return x.height
    return int(x)


def check_stage_conservation(
    stage: str,
    *,
    rows_in: int | pl.DataFrame,
    rows_out: int | pl.DataFrame,
    drops: pl.DataFrame | None = None,
    rows_dropped: int | None = None,
    id_column: str | None = None,
    example_count: int = 5,
) -> CheckOutcome:
    """A filtering stage accounts for every row: rows in = rows out + rows dropped with a reason.

    `drops` follows `schema.DROPS`; rows of other stages in it are ignored. Given frames and an
    `id_column`, ids are matched too: rows that vanished without a drop record, output rows that
    were not in the input, and rows both kept and dropped are reported.
    """
    name = f"{stage}_conservation"
    if drops is None and rows_dropped is None:
        raise ValueError("check_stage_conservation needs `drops` (a frame following schema.DROPS) or `rows_dropped`")
    problems: list[str] = []
    examples: list[dict] = []
    md: dict = {"stage": stage}
    drop_ids: pl.Series | None = None
    by_reason: dict[str, int] = {}
    if drops is not None:
        if "stage" in drops.columns:
            drops = drops.filter(pl.col("stage") == stage)
        n_drop = drops.height
        if "reason_code" in drops.columns:
            no_reason = drops.filter(pl.col("reason_code").is_null() | (pl.col("reason_code") == "")).height
            by_reason = dict(
                drops.group_by(pl.col("reason_code").fill_null("<none>")).len().sort("len", descending=True).iter_rows()
            )
        else:
            no_reason = n_drop
        if no_reason:
            problems.append(f"{no_reason} drops have no reason_code")
        md["drops_without_reason"] = no_reason
        if "row_id" in drops.columns:
            drop_ids = drops["row_id"].cast(pl.Utf8)
            dup = drop_ids.len() - drop_ids.n_unique()
            if dup:
                problems.append(f"{dup} rows are recorded as dropped more than once")
            md["duplicate_drop_records"] = dup
    else:
        n_drop = int(rows_dropped)  # type: ignore[arg-type]
    n_in, n_out = _count(rows_in), _count(rows_out)
    diff = n_in - n_out - n_drop
    md.update(rows_in=n_in, rows_out=n_out, rows_dropped=n_drop, unaccounted=diff, drops_by_reason=by_reason)
    if diff:
        problems.append(f"{diff:+d} rows unaccounted for ({n_in} in, {n_out} out, {n_drop} dropped)")
    if id_column and isinstance(rows_in, pl.DataFrame) and isinstance(rows_out, pl.DataFrame):
        ids_in = rows_in[id_column].cast(pl.Utf8)
        ids_out = rows_out[id_column].cast(pl.Utf8)
        dropped = drop_ids if drop_ids is not None else pl.Series([], dtype=pl.Utf8)
        vanished = ids_in.filter(~ids_in.is_in(ids_out.implode()) & ~ids_in.is_in(dropped.implode()))
        appeared = ids_out.filter(~ids_out.is_in(ids_in.implode()))
        both = ids_out.filter(ids_out.is_in(dropped.implode()))
        md.update(vanished_ids=vanished.len(), unknown_output_ids=appeared.len(), kept_and_dropped=both.len())
        for what, ids in (
            ("vanished without a drop record", vanished),
            ("appeared from nowhere", appeared),
            ("were both kept and dropped", both),
        ):
            if ids.len():
                problems.append(f"{ids.len()} rows {what}")
                examples.extend({"row_id": i, "problem": what} for i in ids.head(example_count).to_list())
    detail = "; ".join(problems) if problems else f"{n_in} in = {n_out} out + {n_drop} dropped"
    return CheckOutcome(
        name, passed=not problems, detail=detail, metadata=md, examples=examples[:example_count], severity=CRITICAL
    )


def check_ingest_conservation(
    records_read: int, accepted: int, quarantined: int, *, quarantine_rows: int | None = None
) -> CheckOutcome:
    """Records read = accepted + quarantined; optionally, the quarantine table holds `quarantined` rows."""
    problems = []
    diff = records_read - accepted - quarantined
    if diff:
        problems.append(
            f"{diff:+d} records unaccounted for ({records_read} read, {accepted} accepted, {quarantined} quarantined)"
        )
    if quarantine_rows is not None and quarantine_rows != quarantined:
        problems.append(f"the quarantine table holds {quarantine_rows} rows, the reader counted {quarantined}")
    md = {
        "records_read": records_read,
        "accepted": accepted,
        "quarantined": quarantined,
        "unaccounted": diff,
        "quarantine_rate": round(quarantined / records_read, 6) if records_read else 0.0,
    }
    if quarantine_rows is not None:
        md["quarantine_rows"] = quarantine_rows
    detail = (
        "; ".join(problems) if problems else f"{records_read} read = {accepted} accepted + {quarantined} quarantined"
    )
    return CheckOutcome("ingest_conservation", passed=not problems, detail=detail, metadata=md)


def check_ingest_stats(stats: pl.DataFrame, *, quarantine: pl.DataFrame | None = None) -> CheckOutcome:
    """Ingest conservation from `schema.INGEST_STATS` rows (one per source), checked per row and in total."""
    need = ["records_read", "accepted", "quarantined"]
    missing = [c for c in need if c not in stats.columns]
    if missing:
        return CheckOutcome("ingest_conservation", False, f"cannot check: stats lack columns {missing}")
    total = stats.select(pl.col(need).sum())
    read, acc, quar = (int(total[c].item() or 0) for c in need)
    outcome = check_ingest_conservation(
        read, acc, quar, quarantine_rows=quarantine.height if quarantine is not None else None
    )
    bad = stats.filter(pl.col("records_read") != pl.col("accepted") + pl.col("quarantined"))
    if bad.height:
        outcome.passed = False
        outcome.examples = bad.head(5).to_dicts()
        outcome.detail = f"{bad.height} ingest stats rows do not balance; " + outcome.detail
    outcome.metadata["stats_rows"] = stats.height
    outcome.metadata["unbalanced_stats_rows"] = bad.height
    return outcome
