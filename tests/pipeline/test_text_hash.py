from __future__ import annotations

import pytest

from pipeline.text_hash import normalize_text, normalized_text_hashes, raw_text_hashes


@pytest.mark.parametrize(
    "raw,norm",
    [
        ("Hello,   World!", "hello world"),
        ("Ｈｅｌｌｏ ｗｏｒｌｄ", "hello world"),  # fullwidth folds under NFKC
        ("Don’t STOP… believing!!", "dont stop believing"),
        ("  tabs\tand\nnew lines  ", "tabs and new lines"),
        ("Straße", "strasse"),  # casefold, not just lower
        ("ﬁne", "fine"),  # ligature
        ("i ❤ pizza 🍕", "i ❤ pizza 🍕"),  # symbols and emoji carry meaning: kept
        ("...", ""),
        (None, ""),
    ],
)
def test_normalize_text(raw: str | None, norm: str) -> None:
    assert normalize_text(raw) == norm
    assert normalize_text(normalize_text(raw)) == norm


def test_normalized_text_hash_is_stable_and_normalized() -> None:
    h, same, other = normalized_text_hashes(["Hello, World!", "  HELLO world ", "hello word"])
    assert h == "e9a804b2e527fd3601d2ffc0bb023cd6"  # blake2b-128 of "hello world": fixed across runs and versions
    assert same == h and other != h


def test_raw_text_hash_keys_the_bytes_as_they_are() -> None:
    raw = raw_text_hashes(["hello world", "Hello, World!", None, ""])
    assert raw[0] == normalized_text_hashes(["Hello, World!"])[0]  # the same BLAKE2b-128 of the same bytes
    assert raw[1] != raw[0] and raw[2] == raw[3]  # a missing text hashes as the empty one
