"""The text PII detection reads, and the way back to the text as written.

A detector matches ASCII shapes (`@`, digits, `://`), so a phone in full-width or Arabic-Indic digits, an
email with a full-width `＠` or a zero-width space inside, would pass it. It therefore reads a *view* of the
text: each character NFKC-normalised (full-width and other compatibility forms to their plain ones), format
characters (zero-width spaces and joiners, bidi controls, soft hyphens) left out, and a decimal digit of any
script written as its ASCII digit. Every character of the view remembers the character of the text it came
from, so a span found in the view maps back to the text, which keeps its own characters outside the spans.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache


@lru_cache(maxsize=4096)
def _view_of_char(c: str) -> str:
    if unicodedata.category(c) == "Cf":
        return ""
    out = unicodedata.normalize("NFKC", c)
    if not out.isascii():
        out = "".join(str(unicodedata.decimal(d)) if d.isdecimal() else d for d in out)
    return out


class TextView:
    """`text` as the detectors read it (`view`), with the offsets of the original behind each view character."""

    __slots__ = ("_ends", "_starts", "text", "view")

    def __init__(self, text: str):
        self.text = text
        if text.isascii():
            # ASCII is its own view: no compatibility form, no format character, no other digit
            self.view, self._starts, self._ends = text, None, None
            return
        parts: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        for i, c in enumerate(text):
            v = c if c.isascii() else _view_of_char(c)
            parts.append(v)
            starts += [i] * len(v)
            ends += [i + 1] * len(v)
        self.view = "".join(parts)
        self._starts, self._ends = starts, ends

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The text's span behind the view's `[start, end)` (format characters inside it included)."""
        if self._starts is None or self._ends is None:
            return start, end
        if end <= start:
            at = self._starts[start] if start < len(self._starts) else len(self.text)
            return at, at
        return self._starts[start], self._ends[end - 1]
