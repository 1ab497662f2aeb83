"""Ingest: turn a day's input records into `conversations` rows, or `quarantine` rows with a reason.

Nothing is lost: a *record* is one input message, one input line/row that could not be read as
messages at all (bad JSON, bad UTF-8, a conversation whose `messages` is not a list...), or one file
that was refused or could not be read to its end (at line 0). Every record ends in exactly one of the
two tables, so ``records_read == accepted + quarantined`` always holds, and the counts are kept by the
reader, not derived from the outputs. No bad record or file fails the day: whatever slips past the
checks below is quarantined too.

Accepted text is scrubbed of PII before anything leaves ingest (`pipeline.privacy.scrub_step`, the step
`scrubbed_conversations` is named for, with the same `PrivacyConfig` as quarantine payloads), so the
landing table never holds raw PII: each accepted row carries the `pii_types` replaced in it, and the
result the day's counts per type (`pii_counts`). A quarantine row keeps the record as a person needs
it to see what went wrong, and no more: user ids replaced by the salted hash the accepted rows carry,
strings scrubbed of PII and cut like accepted text, the payload cut to 20,000 characters
(`pipeline.redact`).

Identifiers are untrusted like text: each has a charset and a length (`pipeline.ingest_fields.check_id`).
Conversation and message ids are stored as keyed hashes (`UserHasher.pseudonym`), a conversation's keyed by
its user, so that the same id sent by two users stays two conversations; character, surface and served_by
are scrubbed like text.

Reason codes (the `quarantine.reason_code` column), per line or record:

==========================  ==========================================================================
invalid_json                the line is not valid JSON
invalid_utf8                the line is not valid UTF-8
stray_bom                   a byte-order mark opens a line other than the file's first
line_too_long               the line is longer than `max_line_bytes` (decompressed); not parsed
nesting_too_deep            objects and lists nest deeper than `max_json_depth`; not parsed
int_too_long                an integer has more digits than `max_int_digits`
missing_field               a required field is absent (conversation_id, role, text/content, ts)
empty_id                    an id is present but null or blank (conversation_id; message_id, user_id)
wrong_type                  a field has the wrong type (text not a string, unparseable timestamp, ...)
bad_value                   a field is outside its value set (source, feedback, negative turn_index)
out_of_range                a number does not fit its column (turn_index beyond a 32-bit integer, given or
                            counted on from the message before)
id_too_long                 an identifier is longer than `max_id_chars`
id_chars                    an identifier holds a character that is not printable (control, format, bidi,
                            zero-width, line break, a space other than U+0020)
lone_surrogate              a string holds a lone UTF-16 surrogate (UTF-8 cannot encode it)
unknown_role                role is not one of user / assistant / system
empty_conversation          a conversation record with an empty `messages` list
empty_text                  text is empty or whitespace only
control_chars               text holds NUL or another control character (tab/newline/CR are fine)
text_too_long               text is longer than `max_text_chars`
ambiguous_user              a message that names no user, in a conversation id that several users send under
duplicate_message_id        a message id already seen in the same conversation (the first one is kept)
ts_out_of_order             a timestamp earlier than the previous accepted message of its conversation
ts_outside_day              a timestamp outside the partition's day (plus `late_grace_minutes` after it)
no_user_turn                a conversation none of whose accepted messages is from the user
==========================  ==========================================================================

Per file (line 0; a refused file is never opened, a cut one keeps the lines before the cut):

==========================  ==========================================================================
symlink                     a symbolic link inside the source folder: refused
outside_source              a path that resolves outside the source folder: refused
hidden_file                 a name starting with '.' (an upload in progress, editor files): not read
unsupported_file            not named .jsonl / .jsonl.gz / .json / .json.gz / .parquet (any letter case), or
                            not a regular file
unreadable_file             cannot be opened, or nothing could be read (a broken gzip or Parquet file, text
                            its encoding cannot decode from the start)
empty_file                  holds no record: no bytes, an empty gzip stream, an empty array, blank lines
truncated_file              breaks before its end (a cut-off gzip stream, a corrupt page)
file_too_large              longer than `max_file_bytes` decompressed: the rest is not read
day_too_large               the day's files passed `max_day_bytes`: the rest is not read
==========================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import polars as pl

from pipeline import schema
from pipeline.folder_scan import FILE_CUT, FILE_REFUSED
from pipeline.ingest_fields import (
    INT32_MAX,
    Reject,
    check_id,
    check_text,
    id_field,
    str_field,
    ts_field,
    turn_index_field,
)
from pipeline.privacy import ScrubCounters, scrub_step, scrub_text
from pipeline.privacy_config import PrivacyConfig
from pipeline.redact import Redactor
from pipeline.seeded_uniform import seeded_uniform
from pipeline.source_config import Record, SourceConfig

REASON_CODES = (
    "invalid_json",
    "invalid_utf8",
    "stray_bom",
    "line_too_long",
    "nesting_too_deep",
    "int_too_long",
    "missing_field",
    "empty_id",
    "wrong_type",
    "bad_value",
    "out_of_range",
    "id_too_long",
    "id_chars",
    "lone_surrogate",
    "unknown_role",
    "empty_conversation",
    "empty_text",
    "control_chars",
    "text_too_long",
    "ambiguous_user",
    "duplicate_message_id",
    "ts_out_of_order",
    "ts_outside_day",
    "no_user_turn",
    *FILE_REFUSED,
    *FILE_CUT,
)
# the codes of a whole file (line 0) rather than of one record
FILE_REASON_CODES = (*FILE_REFUSED, *FILE_CUT)


@dataclass
class IngestConfig:
    max_text_chars: int = field(default=20_000, metadata={"help": "longer messages are quarantined (text_too_long)"})
    late_grace_minutes: int = field(
        default=120,
        metadata={
            "help": "messages up to this long after midnight still belong to the day (conversations that cross it)"
        },
    )
    internal_user_fraction: float = field(
        default=0.1, metadata={"help": "share of users counted as `internal` when a record names no source"}
    )
    default_surface: str = field(default="chat", metadata={"help": "surface recorded when a record names none"})
    default_served_by: str = field(default="gen-0", metadata={"help": "served_by recorded when a record names none"})
    max_id_chars: int = field(
        default=256,
        metadata={"help": "longer identifiers (conversation, message, user, character ...) are quarantined"},
    )

    def __post_init__(self) -> None:
        if self.max_text_chars < 1:
            raise ValueError(f"ingest `max_text_chars` must be >= 1, got {self.max_text_chars}")
        if self.max_id_chars < 1:
            raise ValueError(f"ingest `max_id_chars` must be >= 1, got {self.max_id_chars}")
        if self.late_grace_minutes < 0:
            raise ValueError(f"ingest `late_grace_minutes` must be >= 0, got {self.late_grace_minutes}")

    @classmethod
    def for_source(cls, source: SourceConfig, **kw: Any) -> IngestConfig:
        return cls(
            internal_user_fraction=source.internal_user_fraction,
            default_surface=source.surface,
            default_served_by=source.served_by,
            **kw,
        )


@dataclass
class IngestResult:
    day: date
    # accepted messages, text already scrubbed: `schema.SCRUBBED_CONVERSATIONS` (the contract plus `pii_types`)
    conversations: pl.DataFrame
    quarantine: pl.DataFrame
    records_read: int
    # what scrubbing the accepted text replaced: `pii_type, items, rows` (`pipeline.privacy.scrub_frame`)
    pii_counts: pl.DataFrame
    scrub: ScrubCounters

    def stats(self, source_kind: str) -> pl.DataFrame:
        row = {
            "day": self.day,
            "source_kind": source_kind,
            "records_read": self.records_read,
            "accepted": self.conversations.height,
            "quarantined": self.quarantine.height,
        }
        return pl.DataFrame([row], schema=schema.INGEST_STATS, orient="row")

    def pii_by_type(self) -> dict[str, int]:
        return {t: int(n) for t, n in self.pii_counts.select("pii_type", "items").iter_rows()}

    def reason_counts(self) -> dict[str, int]:
        if not self.quarantine.height:
            return {}
        counts = self.quarantine.group_by("reason_code").len().sort("len", descending=True)
        return dict(zip(counts["reason_code"].to_list(), counts["len"].to_list()))


class _DayIngest:
    """Validates one day's records; collects accepted candidates and quarantine rows."""

    def __init__(self, day: date, cfg: IngestConfig, hasher: schema.UserHasher, privacy: PrivacyConfig):
        self.day = day
        self.cfg = cfg
        self.hasher = hasher
        self.privacy = privacy
        self.redactor = Redactor(hasher, privacy, cfg.max_text_chars)
        self.start = datetime.combine(day, time.min).replace(tzinfo=UTC)
        self.end = self.start + timedelta(days=1, minutes=cfg.late_grace_minutes)
        self.records_read = 0
        self.quarantine: list[dict] = []
        # raw conversation_id -> list of (order, candidate row, record, payload) in input order; split by user
        # in `finish`, so that two users sending under one id keep two conversations
        self.conversations: dict[str, list[tuple[int, dict, Record, Any]]] = {}
        self._order = 0
        # character_id, surface and served_by take few values a day: each is scrubbed once
        self._labels: dict[str, str] = {}

    def reject(self, rec: Record, code: str, detail: str, payload: Any = None) -> None:
        """Quarantine `rec` (or `payload`, the part of it that was rejected), redacted."""
        if payload is not None:
            raw = self.redactor.value(payload)
        elif rec.error is not None or rec.value is None:
            raw = self.redactor.line(rec.raw)
        else:
            raw = self.redactor.value(rec.value)
        self.quarantine.append(
            {
                "day": self.day,
                # a file is named by whoever wrote it: its name is scrubbed like text
                "source_file": self.redactor.label(rec.source_file),
                "line": rec.line,
                "reason_code": code,
                # a reader's detail is its own wording; a check's may quote the record
                "detail": detail if rec.error is not None else self.redactor.detail(detail),
                "raw": raw,
            }
        )

    # -- per record ----------------------------------------------------------------------------
    def add(self, rec: Record) -> None:
        if rec.error is not None:
            self.records_read += 1
            self.reject(rec, *rec.error)
            return
        value = rec.value
        if not isinstance(value, dict):
            self.records_read += 1
            self.reject(rec, "wrong_type", f"record is a JSON {type(value).__name__}, expected an object")
            return
        if "messages" in value:
            self._add_conversation(rec, value)
        else:
            self.records_read += 1
            self._add_message(rec, value, value, position=None)

    def _add_conversation(self, rec: Record, conv: dict) -> None:
        messages = conv["messages"]
        if not isinstance(messages, list):
            self.records_read += 1
            self.reject(rec, "wrong_type", f"`messages` is {type(messages).__name__}, expected a list")
            return
        if not messages:
            self.records_read += 1
            self.reject(rec, "empty_conversation", "`messages` is an empty list")
            return
        meta = {k: v for k, v in conv.items() if k != "messages"}
        if "conversation_id" not in meta and "id" not in meta:
            # the file and line name the conversation; the id is pseudonymised like any other
            meta["conversation_id"] = f"{rec.source_file}:{rec.line}"
        for i, m in enumerate(messages):
            self.records_read += 1
            if not isinstance(m, dict):
                self.reject(rec, "wrong_type", f"message {i} is a JSON {type(m).__name__}, expected an object", [m])
                continue
            self._add_message(rec, m, meta, position=i)

    def _add_message(self, rec: Record, m: dict, meta: dict, position: int | None) -> None:
        where = f"message {position}: " if position is not None else ""
        # a message of a conversation is kept with its conversation's metadata (the user id among it)
        payload = m if m is meta else {**meta, "message": m}
        try:
            cand = self._candidate(m, meta, position)
        except Reject as r:
            self.reject(rec, r.code, where + r.detail, payload)
            return
        except Exception as e:  # a bad record never fails the run, whatever slipped past the checks
            self.reject(rec, "wrong_type", f"{where}unreadable message ({type(e).__name__}: {e})", payload)
            return
        self._order += 1
        self.conversations.setdefault(cand["conversation_id"], []).append((self._order, cand, rec, payload))

    def _label(self, value: str | None) -> str | None:
        """A label-like identifier (character, surface, served_by) as the lake stores it: scrubbed like text."""
        if value is None:
            return None
        if value not in self._labels:
            self._labels[value] = scrub_text(value, self.privacy)
        return self._labels[value]

    def _candidate(self, m: dict, meta: dict, position: int | None) -> dict:
        max_id = self.cfg.max_id_chars

        def ident(obj: dict, name: str, **kw: Any) -> str | None:
            v = id_field(obj, name, **kw)
            return None if v is None else check_id(v, name, max_id)

        def pick(name: str) -> str | None:
            # a message's own field wins over its conversation's metadata
            v = str_field(m, name, required=False)
            if v is None and m is not meta:
                v = str_field(meta, name, required=False)
            return None if v is None else check_id(v, name, max_id)

        conversation_id = ident(meta, "conversation_id", aliases=() if m is meta else ("id",))
        if conversation_id is None:  # a conversation record's id was defaulted when absent
            raise Reject("missing_field", "required field `conversation_id` is missing")
        role = str_field(m, "role", required=True)
        if role not in schema.ROLES:
            raise Reject("unknown_role", f"role {role!r} is not one of {schema.ROLES}")
        text_key = "text" if "text" in m else "content"
        if text_key not in m or m[text_key] is None:
            raise Reject("missing_field", "required field `text` (or `content`) is missing")
        text = check_text(m[text_key], text_key, self.cfg.max_text_chars)

        ts = ts_field(m, meta)
        if not (self.start <= ts < self.end):
            raise Reject(
                "ts_outside_day",
                f"ts {ts.isoformat()} is outside {self.day.isoformat()} "
                f"(+{self.cfg.late_grace_minutes} min grace, late_grace_minutes)",
            )

        turn_index = turn_index_field(m, position)

        source = pick("source")
        if source is not None and source not in schema.SOURCES:
            raise Reject("bad_value", f"source {source!r} is not one of {schema.SOURCES}")
        feedback = str_field(m, "feedback", required=False)
        if feedback is not None and feedback not in schema.FEEDBACK:
            raise Reject("bad_value", f"feedback {feedback!r} is not one of {schema.FEEDBACK}")

        user_id = ident(m, "user_id", null_is_absent=True)
        if user_id is None and m is not meta:
            user_id = ident(meta, "user_id", null_is_absent=True)
        served_by = pick("served_by")
        return {
            # raw until `finish` pseudonymises them, knowing the conversation's user
            "message_id": ident(m, "message_id", aliases=("id",), null_is_absent=True),
            "conversation_id": conversation_id,
            "turn_index": turn_index,
            "role": role,
            "text": text,
            "ts": ts,
            # None: the message names no user, it takes its conversation's (`finish`)
            "user_hash": None if user_id is None else self.hasher(user_id),
            "character_id": self._label(pick("character_id")) or "default",
            "source": source,
            "served_by": (self._label(served_by) or self.cfg.default_served_by) if role == "assistant" else None,
            "surface": self._label(pick("surface")) or self.cfg.default_surface,
            "feedback": feedback,
            "day": self.day,
        }

    # -- per conversation ----------------------------------------------------------------------
    def _by_user(self, cid: str, items: list) -> list[tuple[str, list]]:
        """The messages sent under one raw conversation id, split into one conversation per user.

        A message naming no user joins the one user its id is sent under (or, with none, the id itself counts
        as the user); under an id several users send under it cannot be placed and is quarantined."""
        users = sorted({it[1]["user_hash"] for it in items if it[1]["user_hash"] is not None})
        if len(users) <= 1:
            return [(users[0] if users else self.hasher(cid), items)]
        parts: dict[str, list] = {u: [] for u in users}
        for it in items:
            if it[1]["user_hash"] is None:
                detail = f"the message names no user, and {len(users)} users send under its conversation id"
                self.reject(it[2], "ambiguous_user", detail, it[3])
            else:
                parts[it[1]["user_hash"]].append(it)
        return list(parts.items())

    def _conversation(self, cid: str, user_hash: str, items: list) -> list[dict]:
        """One user's conversation: ordered, checked across its messages, its ids pseudonymised."""
        conv_id = self.hasher.pseudonym("c", user_hash, cid)
        # canonical message lines may arrive in any order: order them by turn_index, then input
        items.sort(key=lambda it: (it[1]["turn_index"] if it[1]["turn_index"] is not None else 1 << 40, it[0]))
        next_index = 0
        seen_ids: set[str] = set()
        kept: list[tuple[dict, Record, Any]] = []
        last_ts: datetime | None = None
        for _, cand, rec, raw in items:
            if cand["turn_index"] is None:
                if next_index > INT32_MAX:
                    detail = f"no `turn_index`, and the one after the previous message's is beyond {INT32_MAX:_}"
                    self.reject(rec, "out_of_range", detail + ", the column's largest", raw)
                    continue
                cand["turn_index"] = next_index
            next_index = cand["turn_index"] + 1
            mid = cand["message_id"] if cand["message_id"] is not None else f"{cid}:{cand['turn_index']}"
            if mid in seen_ids:
                detail = f"message id repeats in conversation {conv_id} (turn {cand['turn_index']:_})"
                self.reject(rec, "duplicate_message_id", detail, raw)
                continue
            seen_ids.add(mid)
            if last_ts is not None and cand["ts"] < last_ts:
                self.reject(
                    rec,
                    "ts_out_of_order",
                    f"ts {cand['ts'].isoformat()} is earlier than the previous message's {last_ts.isoformat()}",
                    raw,
                )
                continue
            last_ts = cand["ts"]
            cand["message_id"] = self.hasher.pseudonym("m", conv_id, mid)
            cand["conversation_id"] = conv_id
            cand["user_hash"] = user_hash
            if cand["source"] is None:
                internal = seeded_uniform(user_hash) < self.cfg.internal_user_fraction
                cand["source"] = "internal" if internal else "external"
            kept.append((cand, rec, raw))
        if kept and not any(c["role"] == "user" for c, _, _ in kept):
            for _, rec, raw in kept:
                self.reject(rec, "no_user_turn", f"conversation {conv_id} has no accepted user message", raw)
            return []
        return [c for c, _, _ in kept]

    def finish(self) -> IngestResult:
        accepted: list[dict] = []
        for cid, items in self.conversations.items():
            for user_hash, part in self._by_user(cid, items):
                accepted.extend(self._conversation(cid, user_hash, part))
        accepted.sort(key=lambda c: (c["conversation_id"], c["turn_index"]))
        conversations = (
            pl.DataFrame(accepted, schema=schema.CONVERSATIONS, orient="row")
            if accepted
            else schema.empty(schema.CONVERSATIONS)
        )
        quarantine = (
            pl.DataFrame(self.quarantine, schema=schema.QUARANTINE, orient="row")
            if self.quarantine
            else schema.empty(schema.QUARANTINE)
        ).sort(["source_file", "line", "reason_code", "detail"], maintain_order=True)
        # scrubbed here, before anything is written: the landing table never holds raw PII
        scrubbed = scrub_step(conversations, self.privacy)
        return IngestResult(
            self.day,
            scrubbed.kept,
            quarantine,
            self.records_read,
            scrubbed.tables["pii_counts"],
            scrubbed.counters,
        )


def ingest_day(
    records: Iterable[Record],
    day: date,
    config: IngestConfig | None = None,
    hasher: schema.UserHasher | None = None,
    privacy: PrivacyConfig | None = None,
) -> IngestResult:
    """Validate a day's records into accepted conversation rows and quarantine rows; `privacy` is how
    accepted text and quarantined payloads are scrubbed (the scrubbing step's defaults when None)."""
    job = _DayIngest(
        day, config or IngestConfig(), hasher or schema.UserHasher.from_settings(), privacy or PrivacyConfig()
    )
    for rec in records:
        job.add(rec)
    result = job.finish()
    if result.records_read != result.conversations.height + result.quarantine.height:
        raise RuntimeError(
            f"ingest of {day} lost records: read {result.records_read}, accepted {result.conversations.height}, "
            f"quarantined {result.quarantine.height}"
        )
    return result
