"""Text from the data, made safe for the markdown and tables the orchestrator UI renders.

A file name, a character id, a check's detail or a sample value is written by whoever sent the traffic: in
markdown it could open a link (`[x](javascript:...)`), an image or an HTML tag, or end its table row and forge a
line of its own. `md_text` writes such a value as inert inline markdown: line breaks become spaces, characters
that are not printable (controls, bidi overrides, zero-width ones) become `\\uXXXX`, `&`, `<` and `>` become
HTML entities, and the characters that open a link, an image, code, emphasis or a table cell are
backslash-escaped. `plain_text` does the first two for a table cell the UI shows as text.
"""

from __future__ import annotations

import html
import re
from typing import Any

# what opens a link, an image, code, emphasis or a cell; `_` is left as it is, so that snake_case names stay
# readable in the raw file (an underscore inside a word opens nothing)
_MARKUP = re.compile(r"([\\`*\[\]()!|~])")
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def plain_text(value: Any) -> str:
    """`value` on one line, with every character that is not printable written as its `\\uXXXX` code."""
    s = str(value)
    if s.isprintable():
        return s
    return "".join(" " if c in _LINE_BREAKS else c if c.isprintable() else f"\\u{ord(c):04x}" for c in s)


def md_text(value: Any) -> str:
    """`value` as inline markdown that renders as the text itself: no link, image, tag, emphasis or new line."""
    return _MARKUP.sub(r"\\\1", html.escape(plain_text(value), quote=False))
