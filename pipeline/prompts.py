"""Cut conversations into static prompts, each labelled with the engagement of the response it was served.

A static prompt is a conversation's history up to and including one user turn: the turns and their
engagement labels (`continued`, `reply_len`, `depth_after`, `thumbs`) come from `pipeline.turns`, so a
history alternates roles and ends on a user turn. System messages are not turns: those that came before
the cut are joined into the prompt's `system` field.

A user turn that ends its conversation has no served response; its labels are all null. It is
kept by default, because a prompt without a response is still a prompt to generate for (RL and
candidate pools need exactly that). A conversation with no assistant turn at all is dropped by
default (`no_assistant_turn`): nothing was served, so it is an abandoned session rather than a
product prompt.

Conservation: every user turn of a well-formed message becomes a prompt or a drop whose `row_id`
is the prompt id it would have had (reasons in TURN_DROP_REASONS). Messages that cannot be placed
in a conversation are dropped one by one (`pipeline.turns.MESSAGE_DROP_REASONS`, `row_id` = message_id).

A conversation split across daily partitions is labelled from the messages present: a user who
comes back after midnight looks like one who left. Cut a window of days together when that matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from pipeline import schema
from pipeline.step import StepCounters, StepResult
from pipeline.turns import drops_of, label_user_turns, merge_turns, prepare, split_messages

# drops whose unit is a user turn (row_id = the prompt id it would have had)
NO_ASSISTANT_TURN = "no_assistant_turn"
NO_RESPONSE = "no_response"
PROMPT_TOO_LONG = "prompt_too_long"
RESPONSE_TOO_LONG = "response_too_long"
TURN_DROP_REASONS = (NO_ASSISTANT_TURN, NO_RESPONSE, PROMPT_TOO_LONG, RESPONSE_TOO_LONG)


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
    messages, message_drops = split_messages(prepare(conversations))
    turns = merge_turns(messages, config.regenerate_is_negative)
    labelled = label_user_turns(turns)

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
    drops = pl.concat([message_drops, drops_of(turn_drops, "_reason", "_detail")])
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
