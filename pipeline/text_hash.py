"""Text hashes, named for what they hash: the text as it is, or the text normalized.

`raw_text_hashes` keys a text byte for byte (the embedding cache: a vector belongs to exactly the text
it was computed from); `normalized_text_hashes` keys it after `normalize_text` (exact dedup: "Hello,
World!" and "hello world" are one prompt). Both are BLAKE2b-128 as 32 hex characters, stable across
processes and library versions; a missing text hashes as the empty one.

Normalization, in this order: Unicode NFKC (fullwidth letters, ligatures and compatibility forms fold
to plain ones), casefold, NFKC again (casefold can leave unnormalized sequences, and normalizing twice
must be a no-op), apostrophes removed ("don't" == "dont"), every other punctuation character (Unicode
category P*) replaced by a space, whitespace runs collapsed to one space, ends stripped. Symbols and
emoji stay: they carry meaning in chat.
"""

from __future__ import annotations

import hashlib
import sys
import unicodedata
from collections.abc import Iterable
from functools import cache

# names the normalization in what is stored from it (hash runs, MinHash sketches): bump it on any change
NORMALIZATION_VERSION = "n1"

_APOSTROPHES = {ord(c): None for c in "'\u2019\u02bc\u2018`"}


@cache
def _punctuation_table() -> dict[int, str]:
    table = {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}
    table.update(_APOSTROPHES)
    return table


def normalize_text(s: str | None) -> str:
    """NFKC, casefold, apostrophes dropped, other punctuation to spaces, whitespace collapsed."""
    if not s:
        return ""
    s = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", s).casefold())
    return " ".join(s.translate(_punctuation_table()).split())


def _blake128(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def raw_text_hashes(texts: Iterable[str | None]) -> list[str]:
    """The hash of each text as it is, byte for byte."""
    return [_blake128(t or "") for t in texts]


def normalized_text_hashes(texts: Iterable[str | None]) -> list[str]:
    """The hash of each text after `normalize_text`: texts that differ only in case, punctuation,
    whitespace or Unicode form share it."""
    return [_blake128(normalize_text(t)) for t in texts]
