"""What a quarantine row may keep of a rejected record: user ids pseudonymised, text scrubbed and cut.

A rejected record is kept so that a person can see why it was rejected, not who sent it. So it gets
what an accepted row gets: the value of a user id key becomes the same salted hash the accepted rows
carry, every string is scrubbed of PII (`pipeline.privacy`) and cut to the accepted text length, and the
whole payload is cut to a size a report can show. A line that could not be parsed is text, not a
record: its user ids are found by a tolerant pattern (a known key, a separator, a quoted or bare
value), so a half-written or badly encoded line loses its ids too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pipeline.privacy import scrub_text
from pipeline.privacy_config import PrivacyConfig

# keys whose values name a user (compared lower-cased)
USER_ID_KEYS = (
    "user_id",
    "userid",
    "user",
    "uid",
    "username",
    "user_name",
    "sender",
    "sender_id",
    "author",
    "author_id",
)
RAW_LIMIT = 20_000  # characters of a quarantined payload
# scrubbing sees this much beyond a cut, so a PII item that straddles the cut is still recognised
_MARGIN = 256
_MAX_DEPTH = 64  # deeper parts of a payload are elided, not walked
_KEYS = "|".join(re.escape(k) for k in sorted(USER_ID_KEYS, key=len, reverse=True))
_ID_PAIR = re.compile(
    rf"""(?ix)
    (["']?(?<![\w])(?:{_KEYS})["']?\s*[:=]\s*)   # the key and its separator, quoted or not
    ( "(?:[^"\\\n]|\\.)*"?                        # a double-quoted value, perhaps cut off
    | '[^'\n]*'?                                   # a single-quoted one
    | [^\s,;}}\]"']+                                # a bare one
    )"""
)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def _safe(text: str) -> str:
    """Lone surrogates written as escapes: UTF-8 (and so Parquet) cannot hold them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Redactor:
    """Turns a rejected record (a parsed value or an unparseable line) into its quarantine payload."""

    def __init__(self, hasher: Callable[[str], str], config: PrivacyConfig | None = None, max_text_chars: int = 20_000):
        self.hasher = hasher
        self.config = config or PrivacyConfig()
        self.max_text_chars = max_text_chars

    def text(self, s: str) -> str:
        # cut before scrubbing so the work stays bounded; a PII item cut in two is cut off by the final cut
        return _cut(scrub_text(_safe(s[: self.max_text_chars + _MARGIN]), self.config), self.max_text_chars)

    def _pseudonym(self, v: Any) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, (str, int, float)):
            return self.hasher(_safe(str(v)))
        return self.hasher(_safe(json.dumps(v, sort_keys=True, default=str, ensure_ascii=False)))

    def _walk(self, v: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return "[...]"
        if isinstance(v, dict):
            return {
                self.text(str(k)): self._pseudonym(x) if str(k).lower() in USER_ID_KEYS else self._walk(x, depth + 1)
                for k, x in v.items()
            }
        if isinstance(v, (list, tuple)):
            return [self._walk(x, depth + 1) for x in v]
        if isinstance(v, str):
            return self.text(v)
        return v

    def value(self, v: Any) -> str:
        """A parsed record as JSON, ids pseudonymised and strings scrubbed and cut."""
        try:
            text = json.dumps(self._walk(v, 0), ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = self.text(repr(v))
        return _safe(_cut(text, RAW_LIMIT))

    def line(self, raw: str) -> str:
        """An unparseable line: values of user id keys pseudonymised, then scrubbed and cut."""
        raw = _safe(raw[: RAW_LIMIT + _MARGIN])

        def pseudonymise(m: re.Match) -> str:
            value = m.group(2)
            quote = value[0] if value[:1] in "\"'" else ""
            inner = value[1:].removesuffix(quote) if quote else value
            return f"{m.group(1)}{quote or ''}{self.hasher(inner)}{quote}"

        return _cut(scrub_text(_ID_PAIR.sub(pseudonymise, raw), self.config), RAW_LIMIT)

    def detail(self, detail: str) -> str:
        return _safe(scrub_text(detail, self.config))
