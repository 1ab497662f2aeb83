"""What a quarantine row may keep of a rejected record: ids pseudonymised, text scrubbed and cut.

A rejected record is kept so that a person can see why it was rejected, not who sent it. So it gets
what an accepted row gets: the value of a user id key becomes the same salted hash the accepted rows
carry, a conversation or message id a keyed hash of its own, every string is scrubbed of PII
(`pipeline.privacy`) and cut to the accepted text length, and the whole payload is cut to a size a report
can show. A line that could not be parsed is text, not a record: its ids are found by a tolerant pattern
(a key however JSON spells it, a separator, a quoted, bare, list or object value), so a half-written or
badly encoded line loses its ids too.
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
# keys of other identifiers that can carry a person (a conversation id made of a user name, a message id of a
# phone number): pseudonymised too, with a keyed hash of their own kind
OTHER_ID_KEYS = ("conversation_id", "message_id", "id")
RAW_LIMIT = 20_000  # characters of a quarantined payload
# scrubbing sees this much beyond a cut, so a PII item that straddles the cut is still recognised
_MARGIN = 256
_MAX_DEPTH = 64  # deeper parts of a payload are elided, not walked
# keys compared by their letters and digits only, lower-cased: `userId`, `User-ID` and a key a bad byte landed
# in (`"\\xffuser_id"` once decoded with escapes) name the same field as `user_id`
_NOT_KEY_CHARS = re.compile(r"\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|[^a-z0-9]")


def _norm_key(key: str) -> str:
    return _NOT_KEY_CHARS.sub("", key.lower())


_USER_KEYS = frozenset(_norm_key(k) for k in USER_ID_KEYS)
_ID_KEYS = _USER_KEYS | frozenset(_norm_key(k) for k in OTHER_ID_KEYS)
# a key in a line that could not be parsed, written as JSON allows (escapes included), single-quoted or bare,
# with its separator
_KEY = re.compile(r""""((?:[^"\\\n]|\\.)*)"\s*[:=]\s*|'([^'\n]*)'\s*[:=]\s*|(?<![\w"'\\])([A-Za-z_]\w*)\s*[:=]\s*""")
# a surrogate pair, or one escape of a character beyond ASCII that is no surrogate
_NON_ASCII_ESCAPE = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
    r"|\\u(?![dD][89a-fA-F])(?!00[0-7])([0-9a-fA-F]{4})"
)
_BARE = re.compile(r"""[^\s,;}\]"']+""")


def _key_name(m: re.Match) -> str:
    if m.group(1) is not None:
        try:
            return _norm_key(str(json.loads(f'"{m.group(1)}"')))
        except ValueError:
            return _norm_key(m.group(1))
    return _norm_key(m.group(2) if m.group(2) is not None else m.group(3))


def _non_ascii_unescaped(text: str) -> str:
    """`\\uXXXX` escapes of characters beyond ASCII written as the characters, so that PII written as escapes
    (`\\uff14\\uff11...`) is scrubbed like PII written plainly. ASCII escapes stay: one could be a quote."""
    if "\\u" not in text:
        return text

    def one(m: re.Match) -> str:
        if m.group(1):
            hi, lo = int(m.group(1), 16), int(m.group(2), 16)
            return chr(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
        return chr(int(m.group(3), 16))

    return _NON_ASCII_ESCAPE.sub(one, text)


def _merged(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Spans in order, each overlapping run merged into one (named by its first key)."""
    merged: list[tuple[int, int, str]] = []
    for start, end, key in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]), merged[-1][2])
        else:
            merged.append((start, end, key))
    return merged


def _value_end(text: str, start: int) -> int:
    """Where the value opening at `start` ends: a quoted string at its closing quote, a list or object at its
    closing bracket (strings inside skipped), a bare value at a separator; the end of the line when cut off."""
    first = text[start : start + 1]
    if first in ("[", "{"):
        depth, i, n = 0, start, len(text)
        while i < n:
            c = text[i]
            if c == '"':
                i += 1
                while i < n and text[i] != '"':
                    i += 2 if text[i] == "\\" else 1
            elif c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    if first == '"':
        i, n = start + 1, len(text)
        while i < n and text[i] not in '"\r\n':
            i += 2 if text[i] == "\\" else 1
        return min(i + 1, n) if i < n and text[i] == '"' else i
    if first == "'":
        close = text.find("'", start + 1)
        breaks = [text.find(c, start + 1) for c in "\r\n"]
        ends = [e for e in (close + 1 if close >= 0 else -1, *breaks) if e >= 0]
        return min(ends) if ends else len(text)
    m = _BARE.match(text, start)
    return m.end() if m else start


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def _safe(text: str) -> str:
    """Lone surrogates written as escapes: UTF-8 (and so Parquet) cannot hold them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _printable(text: str) -> str:
    """Characters that are not printable (controls, bidi overrides, zero-width ones) written as `\\uXXXX`
    escapes: a payload shown in a report or a terminal cannot reorder or hide what it holds."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


class Redactor:
    """Turns a rejected record (a parsed value or an unparseable line) into its quarantine payload."""

    def __init__(self, hasher: Callable[[str], str], config: PrivacyConfig | None = None, max_text_chars: int = 20_000):
        self.hasher = hasher
        self.config = config or PrivacyConfig()
        self.max_text_chars = max_text_chars

    def text(self, s: str) -> str:
        # cut before scrubbing so the work stays bounded; a PII item cut in two is cut off by the final cut
        return _cut(scrub_text(_safe(s[: self.max_text_chars + _MARGIN]), self.config), self.max_text_chars)

    def _pseudonym(self, v: Any, key: str = "userid") -> Any:
        if v is None or isinstance(v, bool):
            return v
        text = _safe(str(v)) if isinstance(v, (str, int, float)) else None
        if text is None:
            text = _safe(json.dumps(v, sort_keys=True, default=str, ensure_ascii=False))
        if key in _USER_KEYS:
            return self.hasher(text)
        pseudonym = getattr(self.hasher, "pseudonym", None)
        return pseudonym("id", text) if pseudonym else self.hasher("id\x1f" + text)

    def _walk(self, v: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return "[...]"
        if isinstance(v, dict):
            return {
                self.text(str(k)): self._pseudonym(x, _norm_key(str(k)))
                if _norm_key(str(k)) in _ID_KEYS
                else self._walk(x, depth + 1)
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
        return _printable(_safe(_cut(text, RAW_LIMIT)))

    def line(self, raw: str) -> str:
        """An unparseable line: values of id keys pseudonymised (a key spelled with escapes, a value that is a
        list or an object included), then scrubbed and cut."""
        raw = _non_ascii_unescaped(_safe(raw[: RAW_LIMIT + _MARGIN]))
        # every key found, even inside another's value: quotes in a broken line may pair up wrongly, so a value
        # that seems to swallow the next key must not hide it; nested and overlapping values are merged
        spans: list[tuple[int, int, str]] = []
        for m in _KEY.finditer(raw):
            key = _key_name(m)
            if key in _ID_KEYS and (end := _value_end(raw, m.end())) > m.end():
                spans.append((m.end(), end, key))
        out: list[str] = []
        pos = 0
        for start, end, key in _merged(spans):
            out += [raw[pos:start], self._quoted_pseudonym(raw[start:end], key)]
            pos = end
        out.append(raw[pos:])
        return _printable(_cut(scrub_text("".join(out), self.config), RAW_LIMIT))

    def _quoted_pseudonym(self, value: str, key: str) -> str:
        """The pseudonym of a value as written in a line, quoted as it was (a list or object becomes a string).
        A value JSON can read is hashed as read, so a whole id hashes as accepted rows carry it."""
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if parsed is None:
            quote = value[0] if value[0] in "\"'" else ""
            inner = value[1:].removesuffix(quote) if quote else value
            return f"{quote}{self._pseudonym(inner, key)}{quote}"
        return json.dumps(self._pseudonym(parsed, key))

    def label(self, name: str) -> str:
        """A name from outside (a file's): scrubbed like text, characters that are not printable escaped."""
        return _printable(self.text(name))

    def detail(self, detail: str) -> str:
        return _safe(scrub_text(detail, self.config))
