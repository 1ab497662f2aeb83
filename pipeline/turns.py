"""A day's messages as turns, each user turn labelled with the response it was served.

Messages that cannot be placed in a conversation are dropped one by one (reasons in MESSAGE_DROP_REASONS,
`row_id` = message_id); of two messages at one position, the one with the smaller message_id stays,
whatever the row order. Consecutive messages of one role are merged into one turn (joined by a newline), so
turns alternate roles; system messages are not turns.

Engagement labels describe the assistant turn that followed a user turn (`served_response`):

- `continued`: the user sent another message after it;
- `reply_len`: length in characters of that next user turn (null when there is none);
- `depth_after`: how many user turns the conversation still had after it;
- `thumbs`: explicit feedback logged on its messages: up/love -> +1, down/report -> -1,
  regenerate -> -1 (asking for another answer rejects this one; `regenerate_is_negative`), else null. When
  a merged turn carries several signals, a negative one wins: one rejected message taints the turn.

A user turn that ends its conversation has no served response; its labels are all null.
"""

from __future__ import annotations

import hashlib

import polars as pl

from pipeline import schema

# the step whose drops these are: messages that never became a turn never became a prompt either
STAGE = "prompts"

# drops whose unit is a message (row_id = message_id)
INVALID_MESSAGE = "invalid_message"
DUPLICATE_TURN_INDEX = "duplicate_turn_index"
MESSAGE_DROP_REASONS = (INVALID_MESSAGE, DUPLICATE_TURN_INDEX)

_REQUIRED = ("conversation_id", "turn_index", "role", "text")
_CARRIED = ("user_hash", "character_id", "source", "day")


def prompt_id(conversation_id: str, cut_turn: int) -> str:
    """Stable id of the prompt cut at `cut_turn`: independent of content, so a re-run or a
    scrubbed text keeps the id, and independent of library versions (unlike polars' hash)."""
    digest = hashlib.blake2b(f"{conversation_id}\x1f{int(cut_turn)}".encode(), digest_size=10)
    return "p_" + digest.hexdigest()


def _prompt_ids(conversation_ids: pl.Series, cut_turns: pl.Series) -> pl.Series:
    return pl.Series(
        "prompt_id",
        [prompt_id(c, t) for c, t in zip(conversation_ids.to_list(), cut_turns.to_list())],
        dtype=pl.Utf8,
    )


def drops_of(frame: pl.DataFrame, reason_col: str, detail_col: str) -> pl.DataFrame:
    """The prompts step's DROPS rows of `frame` (`day`, `row_id`, and the named reason and detail columns)."""
    return schema.drops_of(frame, STAGE, "row_id", reason_col, detail_col)


def prepare(conversations: pl.DataFrame) -> pl.DataFrame:
    """Every contract column present, `turn_index` and `day` typed, and a `row_id` per message: its message id,
    or conversation:turn when it has none."""
    missing = [c for c in _REQUIRED if c not in conversations.columns]
    if missing:
        raise ValueError(f"conversations frame lacks the columns {missing}: it must follow schema.CONVERSATIONS")
    df = conversations
    for name, dtype in schema.CONVERSATIONS.items():
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype).alias(name))
    df = df.with_columns(
        pl.col("turn_index").cast(pl.Int32, strict=False),
        pl.col("day").cast(pl.Date, strict=False),
    )
    return df.with_columns(
        pl.coalesce(
            pl.col("message_id"),
            pl.concat_str(
                [pl.col("conversation_id").fill_null("?"), pl.col("turn_index").cast(pl.Utf8).fill_null("?")],
                separator=":",
            ),
        ).alias("row_id")
    )


def split_messages(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Well-formed messages (sorted) and the drops of the others."""
    problem = (
        pl.when(pl.col("conversation_id").is_null())
        .then(pl.lit("conversation_id is null"))
        .when(pl.col("turn_index").is_null())
        .then(pl.lit("turn_index is null or not an integer"))
        .when(~pl.col("role").is_in(schema.ROLES) | pl.col("role").is_null())
        .then(pl.lit("role is not one of ") + pl.lit("|".join(schema.ROLES)))
        .when(pl.col("text").is_null())
        .then(pl.lit("text is null"))
    )
    df = df.with_columns(problem.alias("_problem"))
    bad = df.filter(pl.col("_problem").is_not_null()).with_columns(pl.lit(INVALID_MESSAGE).alias("_reason"))
    ok = df.filter(pl.col("_problem").is_null()).sort(
        ["conversation_id", "turn_index", "row_id"], nulls_last=True, maintain_order=True
    )
    first = ok.select(pl.struct("conversation_id", "turn_index").is_first_distinct()).to_series()
    dup = ok.filter(~first).with_columns(
        pl.lit(DUPLICATE_TURN_INDEX).alias("_reason"),
        pl.format("turn_index {} already taken in this conversation", pl.col("turn_index")).alias("_problem"),
    )
    drops = pl.concat([drops_of(bad, "_reason", "_problem"), drops_of(dup, "_reason", "_problem")]).sort(
        "row_id", maintain_order=True
    )
    return ok.filter(first).drop("_problem"), drops


def _thumbs_expr(regenerate_is_negative: bool) -> pl.Expr:
    mapping = {"up": 1, "love": 1, "down": -1, "report": -1}
    if regenerate_is_negative:
        mapping["regenerate"] = -1
    return pl.col("feedback").replace_strict(mapping, default=None, return_dtype=pl.Int8)


def merge_turns(messages: pl.DataFrame, regenerate_is_negative: bool = True) -> pl.DataFrame:
    """Merge runs of one role into turns; `t` numbers the turns within a conversation."""
    conv = pl.col("conversation_id")
    msgs = messages.filter(pl.col("role") != "system").with_columns(
        ((pl.col("role") != pl.col("role").shift(1)).fill_null(True) | (conv != conv.shift(1)).fill_null(True))
        .cum_sum()
        .alias("_turn_key"),
        _thumbs_expr(regenerate_is_negative).alias("_thumb"),
    )
    turns = msgs.group_by("_turn_key", maintain_order=True).agg(
        conv.first(),
        pl.col("role").first(),
        pl.col("text").str.join("\n").alias("content"),
        pl.col("turn_index").max().alias("last_index"),
        *[pl.col(c).last() for c in _CARRIED],
        pl.col("served_by").drop_nulls().last(),
        pl.col("_thumb").min().alias("thumbs"),
    )
    is_user = pl.col("role") == "user"
    return turns.drop("_turn_key").with_columns(
        pl.int_range(pl.len()).over(conv).cast(pl.Int32).alias("t"),
        (is_user.cast(pl.Int32).cum_sum().over(conv) - 1).alias("user_rank"),
        is_user.cast(pl.Int32).sum().over(conv).alias("n_user"),
        (pl.col("role") == "assistant").any().over(conv).alias("has_assistant"),
    )


def label_user_turns(turns: pl.DataFrame) -> pl.DataFrame:
    """One row per user turn with the labels of the turn that followed it."""
    conv = pl.col("conversation_id")
    nxt = turns.with_columns(
        pl.col("content").shift(-1).over(conv).alias("served_response"),
        pl.col("served_by").shift(-1).over(conv).alias("_served_by"),
        pl.col("thumbs").shift(-1).over(conv).alias("_thumbs"),
        pl.col("content").shift(-2).over(conv).alias("_next_user"),
    ).filter(pl.col("role") == "user")
    answered = pl.col("served_response").is_not_null()
    labelled = nxt.select(
        conv,
        pl.col("last_index").alias("cut_turn"),
        "t",
        *_CARRIED,
        pl.col("content").alias("last_user"),
        "served_response",
        pl.when(answered).then(pl.col("_served_by")).alias("served_by"),
        pl.when(answered).then(pl.col("_next_user").is_not_null()).alias("continued"),
        pl.col("_next_user").str.len_chars().cast(pl.Int32).alias("reply_len"),
        pl.when(answered).then(pl.col("n_user") - pl.col("user_rank") - 1).cast(pl.Int32).alias("depth_after"),
        pl.when(answered).then(pl.col("_thumbs")).alias("thumbs"),
        "has_assistant",
    )
    return labelled.with_columns(_prompt_ids(labelled["conversation_id"], labelled["cut_turn"]))
