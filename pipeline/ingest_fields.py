"""The checks ingest runs on one field of an input message: timestamps, string and id fields, and message text.

A failed check raises `Reject` with the reason code the quarantine row carries (see `pipeline.ingest`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

_ALLOWED_CONTROL = {"\t", "\n", "\r"}
INT32_MAX = 2**31 - 1
_TS_KEYS = ("ts", "timestamp", "created_at")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Reject(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse_ts(value: Any, field_name: str) -> datetime:
    if isinstance(value, bool):
        raise Reject("wrong_type", f"`{field_name}` is a boolean, expected an ISO-8601 string or epoch seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise Reject("wrong_type", f"`{field_name}` is not a finite number")
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise Reject("wrong_type", f"`{field_name}` {value!r} is out of range for epoch seconds") from None
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Reject("wrong_type", f"`{field_name}` {value[:60]!r} is not an ISO-8601 timestamp") from None
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    raise Reject(
        "wrong_type", f"`{field_name}` is {type(value).__name__}, expected an ISO-8601 string or epoch seconds"
    )


def str_field(obj: dict, name: str, *, required: bool, aliases: tuple[str, ...] = ()) -> str | None:
    for key in (name, *aliases):
        if key in obj and obj[key] is not None:
            v = obj[key]
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise Reject("wrong_type", f"`{key}` is {type(v).__name__}, expected a string")
            return str(v)
    if required:
        raise Reject("missing_field", f"required field `{name}` is missing")
    return None


def id_field(obj: dict, name: str, aliases: tuple[str, ...] = (), *, null_is_absent: bool = False) -> str | None:
    """The id under `name` (or an alias), None when absent. A null or blank id is rejected, not defaulted:
    records with null ids would otherwise merge into one conversation (or one user)."""
    for key in (name, *aliases):
        if key not in obj or (obj[key] is None and null_is_absent):
            continue
        v = obj[key]
        if v is None or (isinstance(v, str) and not v.strip()):
            raise Reject("empty_id", f"`{key}` is {'null' if v is None else 'blank'}")
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise Reject("wrong_type", f"`{key}` is {type(v).__name__}, expected a string")
        return str(v)
    return None


def check_id(value: str, key: str, max_chars: int) -> str:
    """An identifier as it may be stored: no lone surrogate, at most `max_chars` characters, and printable only
    (no control, format, bidi-override or zero-width character, no line break, no space but U+0020). The
    detail names the offending character by code point, never the value: an id may carry a person."""
    if has_surrogate(value):
        raise Reject("lone_surrogate", f"`{key}` holds a lone surrogate (U+D800..U+DFFF), which UTF-8 cannot encode")
    if len(value) > max_chars:
        raise Reject("id_too_long", f"`{key}` has {len(value)} characters, the limit is {max_chars} (max_id_chars)")
    if not value.isprintable():
        at, bad = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        raise Reject(
            "id_chars", f"`{key}` holds U+{ord(bad):04X} ({unicodedata.category(bad)}) at offset {at}: not printable"
        )
    return value


def has_surrogate(s: str) -> bool:
    return not s.isascii() and _SURROGATE.search(s) is not None


def check_text(text: Any, key: str, max_chars: int) -> str:
    if not isinstance(text, str):
        raise Reject("wrong_type", f"`{key}` is {type(text).__name__}, expected a string")
    if has_surrogate(text):
        at = _SURROGATE.search(text).start()  # type: ignore[union-attr]
        raise Reject("lone_surrogate", f"text holds a lone surrogate U+{ord(text[at]):04X} at offset {at}")
    if not text.strip():
        raise Reject("empty_text", "text is empty or whitespace only")
    bad = next((c for c in text if unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROL), None)
    if bad is not None:
        raise Reject("control_chars", f"text holds control character U+{ord(bad):04X} at offset {text.index(bad)}")
    if len(text) > max_chars:
        raise Reject("text_too_long", f"text has {len(text)} characters, the limit is {max_chars} (max_text_chars)")
    return text


def ts_field(m: dict, meta: dict) -> datetime:
    """The message's timestamp, else its conversation's (under `ts`, `timestamp` or `created_at`)."""
    ts_value = next((m[k] for k in _TS_KEYS if m.get(k) is not None), None)
    if ts_value is None:
        ts_value = next((meta[k] for k in _TS_KEYS if meta.get(k) is not None), None)
    if ts_value is None:
        raise Reject("missing_field", "required field `ts` is missing (on the message or its conversation)")
    return parse_ts(ts_value, "ts")


def turn_index_field(m: dict, position: int | None) -> int | None:
    """The message's own `turn_index`, else its position in its conversation (None for a lone message)."""
    ti = m.get("turn_index")
    if ti is None:
        return position
    if isinstance(ti, bool) or not isinstance(ti, int):
        raise Reject("wrong_type", f"`turn_index` is {type(ti).__name__}, expected an integer")
    if ti < 0:
        raise Reject("bad_value", f"`turn_index` {ti} is negative")
    if ti > INT32_MAX:
        # the value itself is left out: a long number reads as a phone number to the scrubber
        raise Reject(
            "out_of_range",
            f"`turn_index` has {len(str(ti))} digits and is beyond {INT32_MAX:_}, the column's largest",
        )
    return ti
