"""The expectation suites of each table: what every table of the lake must look like.

A `TableSuite` declares a table's contract (column types), the columns that must never be null,
the column sets that must be unique, derived columns (text lengths, list lengths, shares) and a
builder for the table's own expectations (value sets, length bounds, distribution bands). Adding a
table is one `register(TableSuite(...))` call; the `embeddings` suite is a small example. The lake's
daily tables are registered here, the training sets in `quality.training_tables`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pipeline import schema
from quality.outcomes import WARNING
from quality.suite_config import Bands, SuiteConfig

Builder = Callable[[Any, SuiteConfig, frozenset[str]], list[Any]]


@dataclass(frozen=True)
class TableSuite:
    """How to validate one table.

    `build(gxe, config, columns)` gets the `great_expectations.expectations` module (imported
    lazily, GX is slow to import), the thresholds and the frame's columns after `derive`, and
    returns the table's own GX expectations.
    """

    name: str
    # exact column types; all its columns must be present
    contract: pl.Schema | None = None
    # columns whose type is checked only when present
    optional: pl.Schema = field(default_factory=pl.Schema)
    not_null: tuple[str, ...] = ()
    # each entry is one column set that must be unique (one column, or a compound key)
    unique: tuple[tuple[str, ...], ...] = ()
    build: Builder | None = None
    # adds derived columns (lengths, shares) that expectations read; the input frame is not changed
    derive: Callable[[pl.DataFrame], pl.DataFrame] | None = None
    # column whose values identify offending rows in the examples
    id_column: str | None = None
    # a quiet day may legitimately produce no rows (quarantine)
    may_be_empty: bool = False
    # the row count grows with the day's traffic, so a band around the usual count applies; quarantine's is the
    # day's rejects, a handful on most days and hundreds on some, which the ingest quarantine rate reports
    counts_traffic: bool = True


REGISTRY: dict[str, TableSuite] = {}


def register(suite: TableSuite) -> TableSuite:
    REGISTRY[suite.name] = suite
    return suite


def why(text: str) -> dict[str, str]:
    """Expectation `meta` carrying the sentence shown next to the expectation in reports."""
    return {"why": text}


def _quantile_bands(x: Any, column: str, bands: Bands, severity: str, what: str) -> list:
    if not bands:
        return []
    return [
        x.ExpectColumnQuantileValuesToBeBetween(
            column=column,
            quantile_ranges={"quantiles": [b[0] for b in bands], "value_ranges": [[b[1], b[2]] for b in bands]},
            severity=severity,
            meta=why(f"{what} quantiles within their usual bands"),
        )
    ]


def _lengths(x: Any, column: str, low: int, high: int) -> Any:
    return x.ExpectColumnValueLengthsToBeBetween(
        column=column, min_value=low, max_value=high, meta=why(f"{column} has {low}..{high} characters")
    )


def _text_chars(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(_text_chars=pl.col("text").str.len_chars()) if "text" in df.columns else df


def _conversations(x: Any, cfg: SuiteConfig, cols: frozenset[str]) -> list:
    return [
        x.ExpectColumnValuesToBeInSet(column="role", value_set=list(schema.ROLES), meta=why("known roles")),
        x.ExpectColumnValuesToBeInSet(column="source", value_set=list(schema.SOURCES), meta=why("known sources")),
        x.ExpectColumnValuesToBeInSet(column="feedback", value_set=list(schema.FEEDBACK), meta=why("known feedback")),
        x.ExpectColumnValuesToBeBetween(column="turn_index", min_value=0, meta=why("turn_index >= 0")),
        _lengths(x, "text", 1, cfg.max_message_chars),
        x.ExpectCompoundColumnsToBeUnique(
            column_list=["conversation_id", "turn_index"],
            severity=WARNING,
            meta=why("one message per turn index: an ambiguous order breaks prompt cutting"),
        ),
        *_quantile_bands(x, "_text_chars", cfg.message_len_bands, cfg.distribution_severity, "message length"),
    ]


def _quarantine(x: Any, cfg: SuiteConfig, cols: frozenset[str]) -> list:
    if cfg.quarantine_reason_codes:
        reason = x.ExpectColumnValuesToBeInSet(
            column="reason_code", value_set=list(cfg.quarantine_reason_codes), meta=why("known reason codes")
        )
    else:
        reason = x.ExpectColumnValuesToMatchRegex(
            column="reason_code", regex=r"^[a-z][a-z0-9_]*$", meta=why("reason codes are snake_case identifiers")
        )
    return [
        reason,
        x.ExpectColumnValuesToBeBetween(column="line", min_value=0, meta=why("line numbers are >= 0")),
        x.ExpectColumnValueLengthsToBeBetween(
            column="raw", min_value=0, max_value=cfg.max_raw_chars, meta=why("raw records are capped")
        ),
    ]


def _prompts_derive(df: pl.DataFrame) -> pl.DataFrame:
    df = _text_chars(df)
    return df.with_columns(_history_turns=pl.col("history").list.len()) if "history" in df.columns else df


def _prompts(x: Any, cfg: SuiteConfig, cols: frozenset[str]) -> list:
    exps = [
        x.ExpectColumnValuesToBeInSet(column="source", value_set=list(schema.SOURCES), meta=why("known sources")),
        x.ExpectColumnValuesToBeBetween(column="cut_turn", min_value=0, meta=why("cut_turn >= 0")),
        x.ExpectColumnValuesToBeBetween(
            column="_history_turns",
            min_value=1,
            max_value=cfg.max_history_turns,
            meta=why(f"history holds 1..{cfg.max_history_turns} turns"),
        ),
        _lengths(x, "text", 1, cfg.max_prompt_chars),
        _lengths(x, "last_user", 1, cfg.max_message_chars),
        x.ExpectColumnValueLengthsToBeBetween(
            column="served_response",
            min_value=0,
            max_value=cfg.max_message_chars,
            meta=why(f"served_response has at most {cfg.max_message_chars} characters"),
        ),
        x.ExpectColumnValuesToBeBetween(column="reply_len", min_value=0, meta=why("reply_len >= 0")),
        x.ExpectColumnValuesToBeBetween(column="depth_after", min_value=0, meta=why("depth_after >= 0")),
        x.ExpectColumnValuesToBeInSet(column="thumbs", value_set=list(cfg.thumbs_values), meta=why("thumbs in -1/0/1")),
        x.ExpectCompoundColumnsToBeUnique(
            column_list=["conversation_id", "cut_turn"],
            severity=WARNING,
            meta=why("one prompt per cut of a conversation"),
        ),
        *_quantile_bands(x, "_text_chars", cfg.prompt_len_bands, cfg.distribution_severity, "prompt length"),
    ]
    if "split" in cols:
        exps.append(x.ExpectColumnValuesToBeInSet(column="split", value_set=list(cfg.splits), meta=why("known splits")))
    if "cluster_id" in cols:
        exps.append(
            x.ExpectColumnValuesToBeBetween(
                column="cluster_id", min_value=-1, meta=why("cluster ids >= -1 (-1 = noise)")
            )
        )
    return exps


def _clusters_derive(df: pl.DataFrame) -> pl.DataFrame:
    if "share" not in df.columns and "size" in df.columns:
        total = df["size"].sum()
        return df.with_columns(share=pl.col("size") / total if total else pl.lit(0.0))
    return df


def _clusters(x: Any, cfg: SuiteConfig, cols: frozenset[str]) -> list:
    return [
        x.ExpectColumnValuesToBeBetween(column="size", min_value=1, meta=why("every cluster has a member")),
        x.ExpectColumnValuesToBeBetween(column="share", min_value=0.0, max_value=1.0, meta=why("shares are fractions")),
        x.ExpectColumnSumToBeBetween(
            column="share",
            min_value=1.0 - cfg.share_tolerance,
            max_value=1.0 + cfg.share_tolerance,
            meta=why("cluster shares sum to 1"),
        ),
        x.ExpectColumnMaxToBeBetween(
            column="share",
            max_value=cfg.max_cluster_share,
            severity=cfg.distribution_severity,
            meta=why(f"no cluster takes more than {cfg.max_cluster_share:.0%} of the rows"),
        ),
        x.ExpectTableRowCountToBeBetween(
            min_value=cfg.min_clusters,
            severity=cfg.distribution_severity,
            meta=why(f"at least {cfg.min_clusters} clusters"),
        ),
    ]


def _embeddings_derive(df: pl.DataFrame) -> pl.DataFrame:
    if "vector" not in df.columns:
        return df
    vec = pl.col("vector").arr.len() if isinstance(df.schema["vector"], pl.Array) else pl.col("vector").list.len()
    return df.with_columns(_dims=vec)


def _embeddings(x: Any, cfg: SuiteConfig, cols: frozenset[str]) -> list:
    return [
        x.ExpectColumnUniqueValueCountToBeBetween(
            column="_dims", min_value=0, max_value=1, meta=why("one vector size")
        ),
        x.ExpectColumnValuesToBeBetween(column="_dims", min_value=1, meta=why("vectors are not empty")),
    ]


register(
    TableSuite(
        name="conversations",
        contract=schema.CONVERSATIONS,
        not_null=(
            "message_id",
            "conversation_id",
            "turn_index",
            "role",
            "text",
            "ts",
            "user_hash",
            "source",
            "day",
        ),
        unique=(("conversation_id", "message_id"),),
        build=_conversations,
        derive=_text_chars,
        id_column="message_id",
    )
)
register(
    TableSuite(
        name="quarantine",
        contract=schema.QUARANTINE,
        not_null=("day", "source_file", "reason_code"),
        build=_quarantine,
        may_be_empty=True,
        counts_traffic=False,
    )
)
register(
    TableSuite(
        name="prompts",
        contract=schema.PROMPTS,
        optional=pl.Schema({"cluster_id": pl.Int64, "split": pl.Utf8}),
        not_null=(
            "prompt_id",
            "conversation_id",
            "cut_turn",
            "history",
            "text",
            "last_user",
            "user_hash",
            "source",
            "day",
        ),
        unique=(("prompt_id",),),
        build=_prompts,
        derive=_prompts_derive,
        id_column="prompt_id",
    )
)
register(
    TableSuite(
        name="clusters",
        optional=pl.Schema({"size": pl.Int64, "share": pl.Float64}),
        not_null=("cluster_id", "size"),
        unique=(("cluster_id",),),
        build=_clusters,
        derive=_clusters_derive,
        id_column="cluster_id",
    )
)
register(
    TableSuite(
        name="embeddings",
        optional=pl.Schema({"text_hash": pl.Utf8, "vector": pl.List(pl.Float32)}),
        not_null=("text_hash", "vector"),
        unique=(("text_hash",),),
        build=_embeddings,
        derive=_embeddings_derive,
        id_column="text_hash",
    )
)
