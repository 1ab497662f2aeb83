"""Table contracts of the lake as explicit polars schemas.

A table's schema is the contract between stages: columns may be added, never silently changed.
`conform` casts a frame onto a schema (and fails loudly on a missing column), so every writer
produces exactly the declared types whatever path built the frame.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field

import polars as pl

ROLES = ("user", "assistant", "system")
SOURCES = ("internal", "external")
FEEDBACK = ("up", "down", "love", "regenerate", "report")

TS = pl.Datetime("us", "UTC")

CONVERSATIONS = pl.Schema(
    {
        "message_id": pl.Utf8,
        "conversation_id": pl.Utf8,
        "turn_index": pl.Int32,
        "role": pl.Utf8,
        "text": pl.Utf8,
        "ts": TS,
        "user_hash": pl.Utf8,
        "character_id": pl.Utf8,
        "source": pl.Utf8,
        "served_by": pl.Utf8,
        "surface": pl.Utf8,
        # Explicit signal the product logged on this message, if any (one of FEEDBACK).
        "feedback": pl.Utf8,
        "day": pl.Date,
    }
)

QUARANTINE = pl.Schema(
    {
        "day": pl.Date,
        "source_file": pl.Utf8,
        "line": pl.Int64,
        "reason_code": pl.Utf8,
        "detail": pl.Utf8,
        "raw": pl.Utf8,
    }
)

# One row per ingested partition: the reader's own count of records, so that conservation
# (read = accepted + quarantined) is checked against a number the writers did not produce.
INGEST_STATS = pl.Schema(
    {
        "day": pl.Date,
        "source_kind": pl.Utf8,
        "records_read": pl.Int64,
        "accepted": pl.Int64,
        "quarantined": pl.Int64,
    }
)


def conform(df: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Select and cast `df` to `schema`, in schema order; a missing column is an error."""
    missing = [c for c in schema.names() if c not in df.columns]
    if missing:
        raise ValueError(f"frame is missing columns {missing} of the contract {list(schema.names())}")
    return df.select([pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items()])


def empty(schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


DEMO_SALT = "characterflywheel-demo-salt"
SALT_ENV = "FLYWHEEL_USER_SALT"
# HMAC-SHA256 keys this short can be brute-forced offline against known ids; `openssl rand -hex 32` gives 64
MIN_SALT_CHARS = 16
# values that ship in the repository (deploy/k8s/secret.example.yaml): public, so no secret
PLACEHOLDER_SALTS = frozenset({"replace-with-a-long-random-value"})
_SALT_FIX = f"set {SALT_ENV} (or the `user_salt` setting) to a long random secret, e.g. `openssl rand -hex 32`"
DEMO_SALT_WARNING = (
    f"user ids are hashed with the PUBLIC demo salt: {SALT_ENV} is not set, so anyone can link a hash to a "
    f"known user id. Fine for the demo; for real traffic {_SALT_FIX} (FLYWHEEL_PRODUCTION=1 refuses the demo salt)"
)

log = logging.getLogger(__name__)


class SaltError(ValueError):
    pass


def check_production_salt(salt: str | None) -> None:
    """Fail fast, naming the setting and the fix, on a salt that production must not use."""
    if not salt:
        raise SaltError(
            f"no user-id salt configured: {_SALT_FIX}; the built-in demo salt is refused when `production` is true"
        )
    if salt == DEMO_SALT:
        raise SaltError(f"{SALT_ENV} is the public demo salt; production needs a secret of its own: {_SALT_FIX}")
    if salt.strip() in PLACEHOLDER_SALTS:
        raise SaltError(
            f"{SALT_ENV} is the placeholder of deploy/k8s/secret.example.yaml, which is public: create the Secret "
            f"with a value of your own: {_SALT_FIX}"
        )
    if len(salt) < MIN_SALT_CHARS:
        raise SaltError(
            f"{SALT_ENV} has {len(salt)} characters; production needs at least {MIN_SALT_CHARS}: {_SALT_FIX}"
        )


@dataclass(frozen=True)
class UserHasher:
    """Replaces raw user ids with a keyed hash (HMAC-SHA256), so raw ids never reach the lake.

    The salt is a secret: with it, a known id can be linked to its hash; without it, nobody can.
    """

    salt: str = field(repr=False)

    @classmethod
    def from_settings(cls, salt: str | None = None, *, production: bool = False) -> UserHasher:
        """The hasher of the configured salt. Production refuses a missing, public or short salt; elsewhere a
        missing salt falls back to the public demo salt, with a warning every time."""
        salt = salt or os.environ.get(SALT_ENV)
        if production:
            check_production_salt(salt)
        elif not salt:
            salt = DEMO_SALT
        hasher = cls(salt)
        if hasher.warning:
            log.warning(hasher.warning)
        return hasher

    @property
    def warning(self) -> str | None:
        """What a run using this hasher must say loudly (the demo salt is public), or None."""
        return DEMO_SALT_WARNING if self.salt == DEMO_SALT else None

    def __call__(self, raw_user_id: str) -> str:
        digest = hmac.new(self.salt.encode(), str(raw_user_id).encode(), hashlib.sha256)
        return "u_" + digest.hexdigest()[:24]

    def pseudonym(self, kind: str, *parts: str) -> str:
        """A keyed id of another identifier (a conversation, a message), `<kind>_<hex>`. The parts are joined
        with a separator an accepted id cannot hold and the kind leads, so no pseudonym equals a user hash."""
        message = "\x1f".join((kind, *parts)).encode("utf-8", "backslashreplace")
        return f"{kind}_{hmac.new(self.salt.encode(), message, hashlib.sha256).hexdigest()[:24]}"


MESSAGE = pl.Struct({"role": pl.Utf8, "content": pl.Utf8})

# A static prompt: a conversation cut at a user turn. Consecutive messages of one role are merged
# into one turn (joined by a newline), so `history` alternates roles and ends with a user turn.
PROMPTS = pl.Schema(
    {
        "prompt_id": pl.Utf8,
        "conversation_id": pl.Utf8,
        # turn_index (in `conversations`) of the last user message inside the history
        "cut_turn": pl.Int32,
        "history": pl.List(MESSAGE),
        "system": pl.Utf8,
        "character_id": pl.Utf8,
        "user_hash": pl.Utf8,
        "source": pl.Utf8,
        # the whole history rendered as "role: content" lines: what dedup and embedding read
        "text": pl.Utf8,
        "last_user": pl.Utf8,
        "served_response": pl.Utf8,
        "served_by": pl.Utf8,
        # engagement labels of the served response
        "continued": pl.Boolean,
        "reply_len": pl.Int32,
        "depth_after": pl.Int32,
        "thumbs": pl.Int8,
        "day": pl.Date,
    }
)

# The contracts of the curated daily tables, each the one before plus what its step adds.
SCRUBBED_CONVERSATIONS = pl.Schema({**CONVERSATIONS, "pii_types": pl.List(pl.Utf8)})
DEDUPED_PROMPTS = pl.Schema({**PROMPTS, "text_hash": pl.Utf8})
PROMPT_EMBEDDINGS = pl.Schema({"prompt_id": pl.Utf8, "text_hash": pl.Utf8, "model_id": pl.Utf8, "day": pl.Date})
POOL = pl.Schema({**DEDUPED_PROMPTS, "cluster_id": pl.Int64, "split": pl.Utf8, "sample_weight": pl.Float64})

# A preference pair: the reply a source prefers (`chosen`) and the other (`rejected`) to one prompt, with how
# strongly it prefers it (`margin`, 0 unknown or slight .. 1). Reward models and DPO both train on these.
PREFERENCE_PAIR = pl.Schema(
    {
        "pair_id": pl.Utf8,
        "prompt_id": pl.Utf8,
        "prompt": pl.List(MESSAGE),
        "chosen": pl.Utf8,
        "rejected": pl.Utf8,
        "source": pl.Utf8,
        "margin": pl.Float64,
    }
)
# the preference dataset DPO trains on: each pair's length and emoji differences (chosen - rejected), and
# why the artifact filters dropped it (null for a kept pair)
PREFERENCE_PAIRS = pl.Schema(
    {**PREFERENCE_PAIR, "delta_len": pl.Int32, "delta_emoji": pl.Int32, "drop_reason": pl.Utf8}
)

# One row per row a step removed: what it was, which step, and why. Every step writes its drops
# here, so a report can account for each row between two tables.
DROPS = pl.Schema(
    {
        "day": pl.Date,
        "stage": pl.Utf8,
        "row_id": pl.Utf8,
        "reason_code": pl.Utf8,
        # the kept row this one duplicates, for dedup drops
        "kept_id": pl.Utf8,
        "detail": pl.Utf8,
    }
)


def drop_row(stage: str, row_id: str, reason_code: str, detail: str | None = None) -> dict:
    """One DROPS row as a dict, for steps that collect their drops row by row (see `drops_frame`)."""
    return {
        "day": None,
        "stage": stage,
        "row_id": row_id,
        "reason_code": reason_code,
        "kept_id": None,
        "detail": detail,
    }


def drops_frame(rows: list[dict] | dict[str, list], stage: str | None = None) -> pl.DataFrame:
    """DROPS rows from a list of row dicts or from columns; absent columns (e.g. `kept_id`) are null, other
    keys are left out, and `stage`, when given, is every row's stage."""
    frame = pl.DataFrame(rows) if isinstance(rows, dict) else pl.DataFrame(rows, infer_schema_length=None)
    if frame.width == 0:
        return empty(DROPS)
    if stage is not None:
        frame = frame.with_columns(stage=pl.lit(stage, pl.Utf8))
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in DROPS.items() if name not in frame.columns]
    return conform(frame.with_columns(missing), DROPS)


def drops_of(
    frame: pl.DataFrame,
    stage: str,
    row_id: pl.Expr | str,
    reason_code: pl.Expr | str,
    detail: pl.Expr | str | None = None,
    kept_id: pl.Expr | str | None = None,
) -> pl.DataFrame:
    """DROPS rows, one per row of `frame` (the rows a step removed): `day` from its `day` column (null without
    one), the others from expressions over it (a string names a column; `pl.lit` gives a constant)."""

    def expr(value: pl.Expr | str | None) -> pl.Expr:
        return pl.lit(None, pl.Utf8) if value is None else pl.col(value) if isinstance(value, str) else value

    day = pl.col("day") if "day" in frame.columns else pl.lit(None, pl.Date)
    return conform(
        frame.select(
            day.alias("day"),
            pl.lit(stage, pl.Utf8).alias("stage"),
            expr(row_id).alias("row_id"),
            expr(reason_code).alias("reason_code"),
            expr(kept_id).alias("kept_id"),
            expr(detail).alias("detail"),
        ),
        DROPS,
    )
