"""The expectation suites of the training sets: SFT examples and preference pairs.

The builders live in `training.policy.datasets_build`, which pulls in torch; the suites restate the builders'
sources and default pair bounds instead, and the tests fail when the two drift apart.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline import schema
from quality.outcomes import WARNING
from quality.suite_config import SuiteConfig
from quality.tables import TableSuite, register, why

SFT_SOURCES = ("rejection_sampled", "steerability", "repaired", "served_engaged", "rewrite")
SEVERAL_PER_PROMPT = ("rewrite", "steerability", "repaired")
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
