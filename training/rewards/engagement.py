"""Engagement signals: what the logs say about how users responded to what the model served.

Two granularities, both derived from the `conversations` table (one row per message):

Per served assistant turn (the labels on `prompts`)
    Messages are ordered by `turn_index` inside a conversation; `system` messages are ignored and
    consecutive messages of one role are merged into one *turn*, the same rule that cuts prompts.
    A *served response* is an assistant turn that directly follows a user turn; its prompt is cut at
    that user turn, so it is keyed by `(conversation_id, cut_turn)` with `cut_turn` the largest
    `turn_index` of the user turn. Its labels:

    - `continued`: the user sent at least one more message in the same conversation after the
      served response. This is the label of the pointwise reward model, p(continue).
    - `reply_len`: length of the user's next turn (all its messages joined by a newline), in
      characters or whitespace-separated words (`EngagementConfig.reply_len_unit`); null when the
      user did not continue.
    - `depth_after`: number of user turns in the conversation after the served response; 0 when
      the user did not continue, so `continued == (depth_after > 0)`.
    - `thumbs`: explicit feedback logged on the turn's assistant messages (`feedback`): `up` and
      `love` count +1, `down` and `report` count -1, and `regenerate` -1 too (asking for another
      answer rejects this one; `EngagementConfig.regenerate_is_negative`). When a merged turn
      carries several marks a negative one wins: one rejected message taints the turn. Null when
      the user gave none. The flags `regenerated`, `loved` and `reported` keep the marks apart.

    These are the definitions `pipeline.prompts` labels the `prompts` table with (characters,
    regenerate negative); a user turn that ends its conversation was served nothing and has null
    labels there, and no row here.

Per user and day (engagement breadth and depth, what the A/B readout measures)
    Only user messages with a `user_hash` count (assistant rows carry the conversation's user,
    but the user did not send them). A user message *got a reply* when the same conversation
    holds an assistant message with a larger `turn_index`, whenever that reply was written.

    - `messages_sent` (depth): user messages the user sent that day.
    - `replied_messages`: how many of them got a reply.
    - `engaged` (breadth): the user sent at least one message that day that got a reply, i.e.
      the user had a real exchange with a character that day, not just an unanswered message.
    - `conversations`: distinct conversations the user sent a message in that day.

    A user who sent nothing on a day has no row for that day: breadth over a population (say the
    users exposed to an A/B arm) counts the missing rows as not engaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from pipeline import schema

LABEL_COLUMNS = ("continued", "reply_len", "depth_after", "thumbs")

THUMB_VALUE = {"up": 1, "love": 1, "down": -1, "report": -1}

SERVED_TURN_LABELS = pl.Schema(
    {
        "conversation_id": pl.Utf8,
        "cut_turn": pl.Int32,
        "response_turn": pl.Int32,
        "continued": pl.Boolean,
        "reply_len": pl.Int32,
        "depth_after": pl.Int32,
        "thumbs": pl.Int8,
        "regenerated": pl.Boolean,
        "loved": pl.Boolean,
        "reported": pl.Boolean,
        "day": pl.Date,
    }
)

USER_DAY_ENGAGEMENT = pl.Schema(
    {
        "user_hash": pl.Utf8,
        "day": pl.Date,
        "engaged": pl.Boolean,
        "messages_sent": pl.Int64,
        "replied_messages": pl.Int64,
        "conversations": pl.Int64,
    }
)

LABEL_STAGE = "engagement_labels"
USER_DAY_STAGE = "user_day_engagement"


@dataclass
class EngagementConfig:
    reply_len_unit: str = field(
        default="chars",
        metadata={"help": "Unit of `reply_len`: 'chars' (characters) or 'words' (whitespace-separated tokens)."},
    )
    regenerate_is_negative: bool = field(
        default=True,
        metadata={
            "help": "Count `regenerate` feedback as thumbs -1 (the user asked for another answer); "
            "False ignores it for thumbs."
        },
    )

    def __post_init__(self) -> None:
        if self.reply_len_unit not in ("chars", "words"):
            raise ValueError(f"reply_len_unit={self.reply_len_unit!r} is not known: set it to 'chars' or 'words'")


def _length(expr: pl.Expr, unit: str) -> pl.Expr:
    if unit == "words":
        return expr.str.count_matches(r"\S+")
    return expr.str.len_chars()


def _thumb_marks(config: EngagementConfig) -> dict[str, int]:
    marks = dict(THUMB_VALUE)
    if config.regenerate_is_negative:
        marks["regenerate"] = -1
    return marks


def _turns(conversations: pl.DataFrame, config: EngagementConfig) -> pl.DataFrame:
    """Merge consecutive same-role user/assistant messages into turns, numbered per conversation."""
    msgs = (
        conversations.filter(pl.col("role").is_in(["user", "assistant"]))
        .sort("conversation_id", "turn_index")
        .with_columns(
            (pl.col("role") != pl.col("role").shift(1).over("conversation_id"))
            .fill_null(True)
            .cum_sum()
            .over("conversation_id")
            .alias("turn_no")
        )
    )
    return (
        msgs.group_by("conversation_id", "turn_no", maintain_order=True)
        .agg(
            pl.col("role").first(),
            pl.col("turn_index").max().alias("last_index"),
            pl.col("text").fill_null("").str.join("\n").alias("text"),
            pl.col("feedback")
            .replace_strict(_thumb_marks(config), default=None, return_dtype=pl.Int8)
            .min()
            .alias("thumbs"),
            (pl.col("feedback") == "regenerate").any().alias("regenerated"),
            (pl.col("feedback") == "love").any().alias("loved"),
            (pl.col("feedback") == "report").any().alias("reported"),
            pl.col("day").min().alias("day"),
        )
        .sort("conversation_id", "turn_no")
    )


def served_turn_labels(conversations: pl.DataFrame, config: EngagementConfig | None = None) -> pl.DataFrame:
    """Engagement labels of every served assistant turn, keyed by `(conversation_id, cut_turn)`.

    The definitions are in the module docstring. `response_turn` is the largest `turn_index` of
    the served assistant turn; `day` is the day of its first message. Assistant turns that open a
    conversation answer no user turn and get no row.
    """
    config = config or EngagementConfig()
    turns = _turns(conversations, config)
    is_user = (pl.col("role") == "user").cast(pl.Int32)
    turns = turns.with_columns(
        pl.col("role").shift(1).over("conversation_id").alias("prev_role"),
        pl.col("last_index").shift(1).over("conversation_id").alias("prev_index"),
        pl.col("text").shift(-1).over("conversation_id").alias("next_text"),
        pl.col("role").shift(-1).over("conversation_id").alias("next_role"),
        # user turns strictly after this one: total user turns minus those up to and including it
        (is_user.sum().over("conversation_id") - is_user.cum_sum().over("conversation_id")).alias("users_after"),
    )
    served = turns.filter((pl.col("role") == "assistant") & (pl.col("prev_role") == "user"))
    next_user = pl.when(pl.col("next_role") == "user").then(pl.col("next_text"))
    out = served.select(
        pl.col("conversation_id"),
        pl.col("prev_index").alias("cut_turn"),
        pl.col("last_index").alias("response_turn"),
        (pl.col("users_after") > 0).alias("continued"),
        _length(next_user, config.reply_len_unit).alias("reply_len"),
        pl.col("users_after").alias("depth_after"),
        pl.col("thumbs"),
        pl.col("regenerated"),
        pl.col("loved"),
        pl.col("reported"),
        pl.col("day"),
    )
    return schema.conform(out, SERVED_TURN_LABELS)


def with_labels(
    prompts: pl.DataFrame, conversations: pl.DataFrame, config: EngagementConfig | None = None
) -> pl.DataFrame:
    """`prompts` with its four label columns recomputed from `conversations` (and the explicit flags added).

    A prompt whose served turn is not in `conversations` keeps null labels, which `check_labels`
    then drops with a reason.
    """
    labels = served_turn_labels(conversations, config).select(
        "conversation_id", "cut_turn", *LABEL_COLUMNS, "regenerated", "loved", "reported"
    )
    base = prompts.drop([c for c in (*LABEL_COLUMNS, "regenerated", "loved", "reported") if c in prompts.columns])
    return base.join(labels, on=["conversation_id", "cut_turn"], how="left")


def check_labels(prompts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split `prompts` into rows with usable labels and a `schema.DROPS` frame for the others.

    Reason codes: `unanswered` (no served response: a prompt to generate for, but nothing to learn
    engagement from), `missing_label` (`continued` or `depth_after` is null; `thumbs` may be null:
    most users give none), `bad_value` (negative length or depth, thumbs outside -1..1),
    `inconsistent_label` (`continued` disagrees with `depth_after`, a reply length without a
    reply, or a reply without a length).
    Raises ValueError when a label column is missing altogether: that is a contract break.
    """
    missing = [c for c in (*LABEL_COLUMNS, "prompt_id") if c not in prompts.columns]
    if missing:
        raise ValueError(
            f"prompts lack the label columns {missing}: build them with training.rewards.engagement.with_labels"
        )
    unanswered = pl.col("served_response").is_null() if "served_response" in prompts.columns else pl.lit(False)
    reason = (
        pl.when(unanswered)
        .then(pl.lit("unanswered"))
        .when(pl.any_horizontal(pl.col("continued", "depth_after").is_null()))
        .then(pl.lit("missing_label"))
        .when((pl.col("reply_len") < 0) | (pl.col("depth_after") < 0) | (pl.col("thumbs").abs() > 1))
        .then(pl.lit("bad_value"))
        .when(
            (pl.col("continued") != (pl.col("depth_after") > 0))
            | (~pl.col("continued") & pl.col("reply_len").is_not_null())
            | (pl.col("continued") & pl.col("reply_len").is_null())
        )
        .then(pl.lit("inconsistent_label"))
    )
    detail = pl.format(
        "continued={} reply_len={} depth_after={} thumbs={}",
        *[pl.col(c).cast(pl.Utf8).fill_null("null") for c in LABEL_COLUMNS],
    )
    tagged = prompts.with_columns(reason.alias("_reason"), detail.alias("_detail"))
    kept = tagged.filter(pl.col("_reason").is_null()).drop("_reason", "_detail")
    dropped = tagged.filter(pl.col("_reason").is_not_null())
    return kept, schema.drops_of(dropped, LABEL_STAGE, "prompt_id", "_reason", "_detail")


def _user_messages(conversations: pl.DataFrame) -> pl.DataFrame:
    last_reply = (
        conversations.filter(pl.col("role") == "assistant")
        .group_by("conversation_id")
        .agg(pl.col("turn_index").max().alias("_last_reply"))
    )
    day = pl.coalesce(pl.col("day"), pl.col("ts").dt.date()) if "ts" in conversations.columns else pl.col("day")
    return (
        conversations.filter(pl.col("role") == "user")
        .join(last_reply, on="conversation_id", how="left")
        .with_columns(
            day.alias("day"),
            (pl.col("turn_index") < pl.col("_last_reply")).fill_null(False).alias("replied"),
        )
    )


def user_day_engagement(conversations: pl.DataFrame) -> pl.DataFrame:
    """Per user and day: `engaged` (breadth), `messages_sent` (depth), `replied_messages`, `conversations`.

    Definitions are in the module docstring. User messages without a `user_hash` or a day cannot be
    attributed; `user_day_drops` lists them.
    """
    msgs = _user_messages(conversations).filter(pl.col("user_hash").is_not_null() & pl.col("day").is_not_null())
    out = (
        msgs.group_by("user_hash", "day")
        .agg(
            pl.len().alias("messages_sent"),
            pl.col("replied").sum().alias("replied_messages"),
            pl.col("conversation_id").n_unique().alias("conversations"),
        )
        .with_columns((pl.col("replied_messages") > 0).alias("engaged"))
        .sort("day", "user_hash")
    )
    return schema.conform(out, USER_DAY_ENGAGEMENT)


def user_day_drops(conversations: pl.DataFrame) -> pl.DataFrame:
    """User messages that `user_day_engagement` could not attribute, as `schema.DROPS` rows."""
    msgs = _user_messages(conversations)
    reason = (
        pl.when(pl.col("user_hash").is_null())
        .then(pl.lit("missing_user_hash"))
        .when(pl.col("day").is_null())
        .then(pl.lit("missing_day"))
    )
    row_id = (
        pl.col("message_id")
        if "message_id" in msgs.columns
        else pl.format("{}:{}", pl.col("conversation_id"), pl.col("turn_index"))
    )
    dropped = msgs.with_columns(reason.alias("reason_code")).filter(pl.col("reason_code").is_not_null())
    detail = pl.lit("user message cannot be attributed to a user and day")
    return schema.drops_of(dropped, USER_DAY_STAGE, row_id, "reason_code", detail)
