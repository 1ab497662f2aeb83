"""The expectation suites of each table: what every table of the lake must look like.

A `TableSuite` declares a table's contract (column types), the columns that must never be null,
the column sets that must be unique, derived columns (text lengths, list lengths, shares) and a
builder for the table's own expectations (value sets, length bounds, distribution bands). Adding a
table is one `register(TableSuite(...))` call; the `embeddings` suite is a small example.
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


# ---- training sets -----------------------------------------------------------------------------------------
# The builders live in `training.policy.datasets_build`, which pulls in torch; the suites restate the builders' sources
# and default pair bounds instead, and the tests fail when the two drift apart.

SFT_SOURCES = ("rejection_sampled", "steerability", "served_engaged", "rewrite")
SEVERAL_PER_PROMPT = ("rewrite", "steerability")
PAIR_MAX_LENGTH_DELTA = 200  # PreferenceBuildConfig.max_length_delta
PAIR_MAX_EMOJI_DELTA = 2  # PreferenceBuildConfig.max_emoji_delta
MESSAGES = pl.List(schema.MESSAGE)
# a derived role when a message has none, or a list has no such turn: fails every role check
NO_ROLE = "<none>"


def _message_features(column: str, prefix: str) -> list[pl.Expr]:
    """Per-row shape of a messages column: turn count, total characters, the last two roles, an unknown role."""
    msgs = pl.col(column)
    role = pl.element().struct.field("role").fill_null(NO_ROLE)
    return [
        msgs.list.len().alias(f"_{prefix}_turns"),
        msgs.list.eval(pl.element().struct.field("content").str.len_chars()).list.sum().alias(f"_{prefix}_chars"),
        msgs.list.last().struct.field("role").fill_null(NO_ROLE).alias(f"_{prefix}_last_role"),
        msgs.list.get(-2, null_on_oob=True).struct.field("role").fill_null(NO_ROLE).alias(f"_{prefix}_prev_role"),
        # the first role outside schema.ROLES, null when all are known, so the offending role shows as an example
        msgs.list.eval(role.filter(~role.is_in(list(schema.ROLES)))).list.first().alias(f"_{prefix}_unknown_role"),
    ]


def _sft_derive(df: pl.DataFrame) -> pl.DataFrame:
    if "messages" not in df.columns:
        return df
    reply = pl.col("messages").list.last().struct.field("content").str.strip_chars().str.len_chars()
    out = df.with_columns(*_message_features("messages", "msg"), _reply_chars=reply.fill_null(0))
    if {"prompt_id", "source", "row_id"} <= set(df.columns):
        # rewrites and character-card replies may hold several examples of one prompt; other sources one
        several = pl.col("source").is_in(list(SEVERAL_PER_PROMPT))
        # a scarce source's extra epochs (row ids suffixed #r1, #r2, ...) are deliberate repeats, not duplicates
        epoch = pl.col("row_id").str.extract(r"(#r\d+)$").fill_null("")
        key = pl.when(several).then(pl.col("row_id")).otherwise(pl.col("prompt_id") + epoch)
        out = out.with_columns(_example_key=key)
    return out


def _sft_examples(x: Any, cfg: SuiteConfig, cols: frozenset[str]) -> list:
    # a system card, the history and the reply
    max_turns = cfg.max_history_turns + 2
    return [
        x.ExpectColumnValuesToBeInSet(column="source", value_set=list(SFT_SOURCES), meta=why("known SFT sources")),
        x.ExpectColumnValuesToBeBetween(
            column="_msg_turns",
            min_value=2,
            max_value=max_turns,
            meta=why(f"an example holds a prompt and its reply: 2..{max_turns} messages"),
        ),
        x.ExpectColumnValuesToBeNull(column="_msg_unknown_role", meta=why(f"roles are {', '.join(schema.ROLES)}")),
        x.ExpectColumnValuesToBeInSet(
            column="_msg_last_role", value_set=["assistant"], meta=why("every example ends with the assistant reply")
        ),
        x.ExpectColumnValuesToBeInSet(
            column="_msg_prev_role", value_set=["user"], meta=why("the reply answers a user turn")
        ),
        x.ExpectColumnValuesToBeBetween(
            column="_reply_chars",
            min_value=1,
            max_value=cfg.max_message_chars,
            meta=why(f"the reply has 1..{cfg.max_message_chars} non-blank characters"),
        ),
        x.ExpectColumnValuesToBeBetween(
            column="_msg_chars",
            min_value=1,
            max_value=cfg.max_prompt_chars,
            meta=why(f"an example has at most {cfg.max_prompt_chars} characters"),
        ),
        x.ExpectCompoundColumnsToBeUnique(
            column_list=["_example_key" if "row_id" in cols else "prompt_id", "source"],
            severity=WARNING,
            # a prompt may be both rejection-sampled and served; twice from one source is a rewrite's or a
            # character card's right
            meta=why("one example per prompt and source (several for rewrites and character cards)"),
        ),
    ]


def _pairs_derive(df: pl.DataFrame) -> pl.DataFrame:
    out = df.with_columns(*_message_features("prompt", "prompt")) if "prompt" in df.columns else df
    if {"chosen", "rejected"} <= set(df.columns):
        chosen, rejected = pl.col("chosen"), pl.col("rejected")
        # the length delta is recomputed from the texts, so a stale `delta_len` cannot hide a long reply
        out = out.with_columns(
            _chosen_chars=chosen.str.strip_chars().str.len_chars().fill_null(0),
            _rejected_chars=rejected.str.strip_chars().str.len_chars().fill_null(0),
            _same_reply=(chosen == rejected).fill_null(False),
            _abs_delta_len=(chosen.str.len_chars().cast(pl.Int64) - rejected.str.len_chars().cast(pl.Int64)).abs(),
        )
    if "delta_emoji" in df.columns:
        out = out.with_columns(_abs_delta_emoji=pl.col("delta_emoji").abs())
    return out


def _preference_pairs(x: Any, cfg: SuiteConfig, cols: frozenset[str]) -> list:
    max_turns = cfg.max_history_turns + 1
    exps = [
        x.ExpectColumnValuesToBeBetween(
            column="_prompt_turns",
            min_value=1,
            max_value=max_turns,
            meta=why(f"the prompt holds 1..{max_turns} messages"),
        ),
        x.ExpectColumnValuesToBeNull(column="_prompt_unknown_role", meta=why(f"roles are {', '.join(schema.ROLES)}")),
        x.ExpectColumnValuesToBeInSet(
            column="_prompt_last_role", value_set=["user"], meta=why("the prompt ends with a user turn")
        ),
        x.ExpectColumnValuesToBeBetween(
            column="_prompt_chars",
            min_value=1,
            max_value=cfg.max_prompt_chars,
            meta=why(f"the prompt has 1..{cfg.max_prompt_chars} characters"),
        ),
        *(
            x.ExpectColumnValuesToBeBetween(
                column=f"_{side}_chars",
                min_value=1,
                max_value=cfg.max_message_chars,
                meta=why(f"{side} has 1..{cfg.max_message_chars} non-blank characters"),
            )
            for side in ("chosen", "rejected")
        ),
        x.ExpectColumnValuesToBeInSet(
            column="_same_reply", value_set=[False], meta=why("chosen and rejected differ: a tie teaches nothing")
        ),
        x.ExpectColumnValuesToBeBetween(
            column="_abs_delta_len",
            min_value=0,
            max_value=PAIR_MAX_LENGTH_DELTA,
            meta=why(f"|length delta| <= {PAIR_MAX_LENGTH_DELTA}, so DPO does not learn that longer wins"),
        ),
        x.ExpectColumnValuesToBeBetween(
            column="_abs_delta_emoji",
            min_value=0,
            max_value=PAIR_MAX_EMOJI_DELTA,
            meta=why(f"|emoji delta| <= {PAIR_MAX_EMOJI_DELTA}, so DPO does not learn that emoji win"),
        ),
        # human labels carry no margin (null); a scored pair's best must beat its worst
        x.ExpectColumnValuesToBeBetween(
            column="margin", min_value=0, strict_min=True, meta=why("scored pairs have a positive margin")
        ),
    ]
    if "drop_reason" in cols:
        exps.append(x.ExpectColumnValuesToBeNull(column="drop_reason", meta=why("only kept pairs are validated")))
    return exps


register(
    TableSuite(
        name="sft_examples",
        contract=pl.Schema({"row_id": pl.Utf8, "prompt_id": pl.Utf8, "source": pl.Utf8, "messages": MESSAGES}),
        not_null=("row_id", "prompt_id", "source", "messages"),
        unique=(("row_id",),),
        build=_sft_examples,
        derive=_sft_derive,
        id_column="row_id",
    )
)
register(
    TableSuite(
        name="preference_pairs",
        contract=pl.Schema({k: v for k, v in schema.PREFERENCE_PAIRS.items() if k != "drop_reason"}),
        optional=pl.Schema({"drop_reason": schema.PREFERENCE_PAIRS["drop_reason"]}),
        # prompt_id is null for annotation pairs written outside the traffic
        not_null=("pair_id", "prompt", "chosen", "rejected", "source", "delta_len", "delta_emoji"),
        unique=(("pair_id",),),
        build=_preference_pairs,
        derive=_pairs_derive,
        id_column="pair_id",
    )
)
