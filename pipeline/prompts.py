"""Cut conversations into static prompts and label the response each prompt was served.

A static prompt is a conversation's history up to and including one user turn. Consecutive
messages of one role are merged into one turn (joined by a newline), so a history alternates
roles and ends on a user turn. System messages are not turns: those that came before the cut are
joined into the prompt's `system` field.

Engagement labels describe the assistant turn that followed the cut (`served_response`):

- `continued`: the user sent another message after it;
- `reply_len`: length in characters of that next user turn (null when there is none);
- `depth_after`: how many user turns the conversation still had after it;
- `thumbs`: explicit feedback logged on its messages: up/love -> +1, down/report -> -1,
  regenerate -> -1 (asking for another answer rejects this one; configurable), else null. When
  a merged turn carries several signals, a negative one wins: one rejected message taints the turn.

A user turn that ends its conversation has no served response; its labels are all null. It is
kept by default, because a prompt without a response is still a prompt to generate for (RL and
candidate pools need exactly that). A conversation with no assistant turn at all is dropped by
default (`no_assistant_turn`): nothing was served, so it is an abandoned session rather than a
product prompt.

Conservation: every user turn of a well-formed message becomes a prompt or a drop whose `row_id`
is the prompt id it would have had (reasons in TURN_DROP_REASONS). Messages that cannot be placed
in a conversation are dropped one by one (reasons in MESSAGE_DROP_REASONS, `row_id` = message_id);
of two messages at one position, the one with the smaller message_id stays, whatever the row order.

A conversation split across daily partitions is labelled from the messages present: a user who
comes back after midnight looks like one who left. Cut a window of days together when that matters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from pipeline import schema
from pipeline.step import StepCounters, StepResult

STAGE = "prompts"

# drops whose unit is a user turn (row_id = the prompt id it would have had)
NO_ASSISTANT_TURN = "no_assistant_turn"
NO_RESPONSE = "no_response"
PROMPT_TOO_LONG = "prompt_too_long"
RESPONSE_TOO_LONG = "response_too_long"
TURN_DROP_REASONS = (NO_ASSISTANT_TURN, NO_RESPONSE, PROMPT_TOO_LONG, RESPONSE_TOO_LONG)

# drops whose unit is a message (row_id = message_id)
INVALID_MESSAGE = "invalid_message"
DUPLICATE_TURN_INDEX = "duplicate_turn_index"
MESSAGE_DROP_REASONS = (INVALID_MESSAGE, DUPLICATE_TURN_INDEX)

_REQUIRED = ("conversation_id", "turn_index", "role", "text")
_CARRIED = ("user_hash", "character_id", "source", "day")


@dataclass
class PromptConfig:
    max_history_turns: int = field(
        default=16,
        metadata={
            "help": "Keep at most this many (merged) turns of history, the cut user turn included; "
            "older turns are left out. 0 keeps the whole history."
        },
    )
    max_text_chars: int = field(
        default=4000,
        metadata={
            "help": "Longest rendered history (`text`, role labels and newlines included). Oldest turns "
            "are left out until it fits; a prompt whose last user turn alone is longer is dropped "
            "(`prompt_too_long`). 0 disables the limit."
        },
    )
    max_response_chars: int = field(
        default=4000,
        metadata={
            "help": "Longest served response (its merged messages). A longer one is a monologue, not a reply "
            "(real logs have bursts of hundreds of messages without an answer): its prompt is dropped "
            "(`response_too_long`). 0 disables the limit."
        },
    )
    keep_unanswered: bool = field(
        default=True,
        metadata={
            "help": "Keep prompts whose user turn ends the conversation (no served response, null labels): "
            "they are still prompts to generate for. False drops them (`no_response`)."
        },
    )
    keep_without_assistant: bool = field(
        default=False,
        metadata={
            "help": "Keep the user turn of a conversation that has no assistant turn at all. By default it is "
            "dropped (`no_assistant_turn`): nothing was served. Needs keep_unanswered."
        },
    )
    regenerate_is_negative: bool = field(
        default=True,
        metadata={
            "help": "Count `regenerate` feedback on a served response as thumbs -1 (the user asked for another "
            "answer). False ignores it."
        },
    )

    def __post_init__(self) -> None:
        if self.max_history_turns < 0:
            raise ValueError(
                f"max_history_turns={self.max_history_turns} is negative: use 0 for the whole history "
                "or a positive number of turns"
            )
        if self.max_response_chars < 0:
            raise ValueError(
                f"max_response_chars={self.max_response_chars} is negative: use 0 for no limit or a positive length"
            )
        if self.max_text_chars < 0:
            raise ValueError(
                f"max_text_chars={self.max_text_chars} is negative: use 0 for no limit or a positive length"
            )
        if self.keep_without_assistant and not self.keep_unanswered:
            raise ValueError(
                "keep_without_assistant=True needs keep_unanswered=True: a conversation without an "
                "assistant turn only has unanswered user turns"
            )


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


def _drops(frame: pl.DataFrame, reason_col: str, detail_col: str) -> pl.DataFrame:
    return schema.drops_of(frame, STAGE, "row_id", reason_col, detail_col)


def _prepare(conversations: pl.DataFrame) -> pl.DataFrame:
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


def _split_messages(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
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
    drops = pl.concat([_drops(bad, "_reason", "_problem"), _drops(dup, "_reason", "_problem")]).sort(
        "row_id", maintain_order=True
    )
    return ok.filter(first).drop("_problem"), drops


def _thumbs_expr(config: PromptConfig) -> pl.Expr:
    mapping = {"up": 1, "love": 1, "down": -1, "report": -1}
    if config.regenerate_is_negative:
        mapping["regenerate"] = -1
    return pl.col("feedback").replace_strict(mapping, default=None, return_dtype=pl.Int8)


def _turns(messages: pl.DataFrame, config: PromptConfig) -> pl.DataFrame:
    """Merge runs of one role into turns; `t` numbers the turns within a conversation."""
    conv = pl.col("conversation_id")
    msgs = messages.filter(pl.col("role") != "system").with_columns(
        ((pl.col("role") != pl.col("role").shift(1)).fill_null(True) | (conv != conv.shift(1)).fill_null(True))
        .cum_sum()
        .alias("_turn_key"),
        _thumbs_expr(config).alias("_thumb"),
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


def _label(turns: pl.DataFrame) -> pl.DataFrame:
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


def _histories(kept: pl.DataFrame, turns: pl.DataFrame, config: PromptConfig) -> pl.DataFrame:
    """history/text per prompt id, after the turn and length caps; prompts that cannot fit are absent."""
    start = pl.lit(0, pl.Int32)
    if config.max_history_turns:
        start = pl.max_horizontal(pl.col("t") - config.max_history_turns + 1, pl.lit(0)).cast(pl.Int32)
    # an integer key in (prompt, turn) order lets the window functions below run without sorting strings
    rows = (
        kept.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("_pid"),
            "conversation_id",
            pl.int_ranges(start, pl.col("t") + 1, dtype=pl.Int32).alias("t"),
        )
        .explode("t")
        .join(
            turns.select("conversation_id", "t", "role", "content"),
            on=["conversation_id", "t"],
            how="left",
            maintain_order="left",
        )
        .with_columns((pl.col("role") + ": " + pl.col("content")).alias("_line"))
    )
    if config.max_text_chars:
        # rendered length of the suffix starting at each turn: one newline per line, less the last
        width = pl.col("_line").str.len_chars() + 1
        suffix = width.sum().over("_pid") - width.cum_sum().over("_pid") + width - 1
        rows = rows.filter(suffix <= config.max_text_chars)
    hist = rows.group_by("_pid", maintain_order=True).agg(
        pl.struct(pl.col("role"), pl.col("content")).alias("history"),
        pl.col("_line").str.join("\n").alias("text"),
    )
    return hist.join(kept.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_pid"), "prompt_id"), on="_pid").drop(
        "_pid"
    )


def _systems(messages: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
    """System messages that came before each cut, joined; later ones would leak the future."""
    sys_msgs = messages.filter(pl.col("role") == "system").select(
        "conversation_id", pl.col("turn_index").alias("_sys_turn"), pl.col("text").alias("_sys_text")
    )
    return (
        prompts.select("prompt_id", "conversation_id", "cut_turn")
        .join(sys_msgs, on="conversation_id", how="inner")
        .filter(pl.col("_sys_turn") < pl.col("cut_turn"))
        .sort(["prompt_id", "_sys_turn"])
        .group_by("prompt_id", maintain_order=True)
        .agg(pl.col("_sys_text").str.join("\n").alias("system"))
    )


@dataclass(frozen=True)
class PromptCounters(StepCounters):
    """`rows_in` counts user turns (each a candidate cut); messages that never became a turn are drops too."""

    answered: int
    conversations: int
    with_thumbs: int
    messages_dropped: int
    continued_rate: float
    mean_depth_after: float


def cut_prompts(conversations: pl.DataFrame, config: PromptConfig | None = None) -> StepResult[PromptCounters]:
    """Cut `conversations` (schema.CONVERSATIONS) into prompts (schema.PROMPTS, `cluster_id` and
    `split` are added by later steps) and the drops (schema.DROPS) of user turns and messages
    that did not become one. Prompts are sorted by conversation and cut turn."""
    config = config or PromptConfig()
    messages, message_drops = _split_messages(_prepare(conversations))
    turns = _turns(messages, config)
    labelled = _label(turns)

    reason = (
        pl.when(~pl.col("has_assistant") & ~pl.lit(config.keep_without_assistant))
        .then(pl.lit(NO_ASSISTANT_TURN))
        .when(pl.col("served_response").is_null() & ~pl.lit(config.keep_unanswered))
        .then(pl.lit(NO_RESPONSE))
        .when(
            pl.lit(config.max_response_chars > 0)
            & (pl.col("served_response").str.len_chars() > config.max_response_chars)
        )
        .then(pl.lit(RESPONSE_TOO_LONG))
    )
    labelled = labelled.with_columns(reason.alias("_reason"))
    kept = labelled.filter(pl.col("_reason").is_null())
    histories = _histories(kept, turns, config)
    too_long = kept.join(histories, on="prompt_id", how="anti").with_columns(pl.lit(PROMPT_TOO_LONG).alias("_reason"))
    prompts = (
        kept.join(histories, on="prompt_id", how="inner")
        .join(_systems(messages, kept), on="prompt_id", how="left")
        .sort(["conversation_id", "cut_turn"])
    )
    prompts = schema.conform(prompts, schema.PROMPTS)

    turn_drops = (
        pl.concat([labelled.filter(pl.col("_reason").is_not_null()), too_long], how="vertical_relaxed")
        .sort(["conversation_id", "cut_turn"])
        .with_columns(
            pl.col("prompt_id").alias("row_id"),
            pl.format(
                "{} cut at turn_index {}{}",
                pl.col("conversation_id"),
                pl.col("cut_turn"),
                pl.when(pl.col("_reason") == PROMPT_TOO_LONG)
                .then(pl.format(": last user turn has {} chars", pl.col("last_user").str.len_chars()))
                .otherwise(pl.lit("")),
            ).alias("_detail"),
        )
    )
    drops = pl.concat([message_drops, _drops(turn_drops, "_reason", "_detail")])
    summary = summarize(prompts, drops)
    counters = PromptCounters(
        rows_in=int(summary["user_turns"]),
        rows_kept=prompts.height,
        answered=int(summary["answered"]),
        conversations=int(summary["conversations"]),
        with_thumbs=int(summary["with_thumbs"]),
        messages_dropped=message_drops.height,
        continued_rate=float(summary["continued_rate"] or 0.0),
        mean_depth_after=float(summary["mean_depth_after"] or 0.0),
    )
    return StepResult(prompts, drops, counters)


def summarize(prompts: pl.DataFrame, drops: pl.DataFrame) -> dict[str, object]:
    """Counters for run metadata: sizes, drop reasons and label coverage of one cut."""
    turn_drops = drops.filter(pl.col("reason_code").is_in(TURN_DROP_REASONS))
    answered = prompts.filter(pl.col("served_response").is_not_null())
    by_reason = dict(drops.group_by("reason_code").len().sort("reason_code").iter_rows())
    return {
        "prompts": prompts.height,
        "user_turns": prompts.height + turn_drops.height,
        "answered": answered.height,
        "unanswered": prompts.height - answered.height,
        "conversations": prompts["conversation_id"].n_unique(),
        "drops_by_reason": by_reason,
        "continued_rate": float(answered["continued"].mean()) if answered.height else None,
        "mean_depth_after": float(answered["depth_after"].mean()) if answered.height else None,
        "with_thumbs": int(prompts["thumbs"].is_not_null().sum()),
        "mean_history_turns": float(prompts["history"].list.len().mean()) if prompts.height else None,
    }


def tail_text(prompts: pl.DataFrame, turns: int = 3, max_chars: int = 1000) -> pl.Series:
    """The last `turns` turns of each history rendered as "role: content" lines.

    This is what a prompt *means* for embedding, semantic dedup and topics: a sentence encoder reads
    only its first few hundred tokens, and the head of a long history (the greeting) says little
    about what the user is asking now.
    """
    if turns < 1:
        raise ValueError(f"tail_text `turns`={turns} must be >= 1")
    rendered = prompts.select(
        pl.col("history")
        .list.tail(turns)
        .list.eval(pl.element().struct.field("role") + pl.lit(": ") + pl.element().struct.field("content"))
        .list.join("\n")
        .str.slice(-max_chars if max_chars else 0)
        .alias("tail_text")
    )
    return rendered["tail_text"]


def chat_messages(system: str | None, history: Sequence[dict], response: str | None = None) -> list[dict]:
    """A prompt row as chat messages: the system card (when set), the history, then the reply (when given)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": m["role"], "content": m["content"] or ""} for m in history or ()]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages
