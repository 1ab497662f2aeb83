"""Style features of a reply: the artifacts a reward model is known to over-reward.

Length, emoji and list formatting are what a policy learns to inflate when it hacks an engagement reward, so
candidates carry them, preference pairs are filtered on their differences, and GRPO can penalise them.
Emoji are counted per grapheme cluster (a family emoji or a flag counts once) with `regex`, which the
transformers stack already depends on, rather than a hand-kept code-point table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import regex

_GRAPHEME = regex.compile(r"\X")
# Emoji_Presentation covers pictographs drawn as emoji by default; text-default symbols (e.g. a heart) count only
# with the emoji variation selector, and keycaps by their combining mark, so (c) and TM signs do not count.
_EMOJI = regex.compile(r"\p{Emoji_Presentation}|\p{Extended_Pictographic}\uFE0F|\u20E3")
# a bullet (markdown's -, * or +, or a bullet sign) or a number of up to three digits, then the item's text;
# longer numbers are years or amounts starting a sentence, not list items
_LIST_LINE = regex.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+\S", regex.MULTILINE)


def count_emoji(text: str) -> int:
    if not text:
        return 0
    return sum(1 for g in _GRAPHEME.findall(text) if _EMOJI.search(g))


def count_list_lines(text: str) -> int:
    """Lines that start a list item (a bullet or a number, then text)."""
    return len(_LIST_LINE.findall(text)) if text else 0


def has_list(text: str) -> bool:
    """A reply formats a list when at least two lines start with a bullet or a number."""
    return count_list_lines(text) >= 2


def style_features(text: str | None) -> dict[str, int | bool]:
    text = text or ""
    return {"n_chars": len(text), "n_emoji": count_emoji(text), "has_list": has_list(text)}


# The numeric surface features a reward model may read (and learn to pay for), in `style_matrix` column order.
STYLE_FEATURES = (
    "log_chars",
    "log_words",
    "emoji",
    "exclamations",
    "questions",
    "list_lines",
    "newlines",
    "upper_frac",
    "repeat_frac",
)


def style_matrix(responses: Sequence[str]) -> np.ndarray:
    """One row of `STYLE_FEATURES` per response (counts as log1p, fractions as they are), float32."""
    rows = []
    for text in responses:
        words = text.split()
        letters = [c for c in text if c.isalpha()]
        rows.append(
            (
                np.log1p(len(text)),
                np.log1p(len(words)),
                np.log1p(count_emoji(text)),
                np.log1p(text.count("!")),
                np.log1p(text.count("?")),
                np.log1p(count_list_lines(text)),
                np.log1p(text.count("\n")),
                sum(c.isupper() for c in letters) / len(letters) if letters else 0.0,
                1.0 - len(set(words)) / len(words) if words else 0.0,
            )
        )
    return np.asarray(rows, dtype=np.float32).reshape(len(responses), len(STYLE_FEATURES))


@dataclass
class StyleGuards:
    """Bounds a reply must meet to become a training target."""

    min_chars: int = field(default=2, metadata={"help": "Replies shorter than this many characters are dropped."})
    max_chars: int = field(default=600, metadata={"help": "Replies longer than this many characters are dropped."})
    max_emoji: int = field(default=3, metadata={"help": "Replies with more emoji than this are dropped."})
    allow_lists: bool = field(default=True, metadata={"help": "Whether list-formatted replies may be kept."})

    def __post_init__(self) -> None:
        if self.min_chars < 0 or self.max_chars < self.min_chars:
            raise ValueError(f"need 0 <= min_chars <= max_chars, got {self.min_chars}, {self.max_chars}; fix them")
        if self.max_emoji < 0:
            raise ValueError(f"max_emoji={self.max_emoji} must be >= 0; set `max_emoji` e.g. to 3")

    def reason(self, text: str | None, pii_check: Callable[[str], bool] | None = None) -> str | None:
        """Why a reply fails the guards (a drop reason code), or None when it passes.

        `pii_check(text)` returns True when the text holds personal data; it runs last, being the costliest.
        """
        if text is None or not text.strip():
            return "empty_response"
        if len(text) < self.min_chars:
            return "too_short"
        if len(text) > self.max_chars:
            return "too_long"
        if count_emoji(text) > self.max_emoji:
            return "too_many_emoji"
        if not self.allow_lists and has_list(text):
            return "list_format"
        if pii_check is not None and pii_check(text):
            return "pii"
        return None


def ended_flags(counts: Sequence[int | None], max_new_tokens: int | None) -> list[bool | None]:
    """Whether each reply ended on its own: fewer tokens than the limit (a reply whose end token fell on the last
    allowed token counts as cut off, since nothing tells the two apart). Unknown (None) without a count or a
    limit. One rule for every table that records it (candidates, evaluation replies)."""
    if max_new_tokens is None:
        return [None] * len(counts)
    return [None if c is None else c < max_new_tokens for c in counts]
