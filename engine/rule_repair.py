"""Bring a reply to keep the rules of its card that concern its form, not what it says.

A small policy rarely writes a whole reply in lowercase, in capitals or signed with its character's name, so
rejection sampling finds almost no reply that keeps such a rule and training has nothing to learn it from:
those rules stay broken generation after generation, and what a generation learnt of them is forgotten by the
next. Three rules can be kept by a change of form alone, which leaves every word of the reply as it was:

- `case`: the reply lower- or upper-cased;
- `sign_with_name`: a signature line with the card's name appended (`— Name`);
- `no_emoji`: the reply's emoji removed (per grapheme cluster, as `engine.style.count_emoji` counts them).

Every other rule (the question ending, the language, lengths, forbidden words, the name) asks for other words,
which only the policy can write. A repaired reply is a training target only when `engine.rules` then finds
every rule of its card kept; the caller checks that, so what counts as keeping a rule stays defined once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import regex

from engine.rules import check_instruction
from engine.style import count_emoji

REPAIRABLE = ("case", "sign_with_name", "no_emoji")

_GRAPHEME = regex.compile(r"\X")
_SPACES = re.compile(r"[ \t]{2,}")


def strip_emoji(text: str) -> str:
    """`text` without its emoji graphemes, the spaces they leave doubled closed up."""
    kept = "".join(g for g in _GRAPHEME.findall(text) if not count_emoji(g))
    return "\n".join(_SPACES.sub(" ", line).rstrip() for line in kept.split("\n")).strip()


def repair_reply(specs: Iterable[dict], text: str, rules: Iterable[str] = REPAIRABLE) -> str:
    """`text` changed in form to keep the `rules` (types) among `specs` that it breaks; the others untouched.

    Emoji go first, so a signature is never followed by one, and the case last, so a signature added to a card
    that also asks for capitals is in capitals too (the signature check ignores case)."""
    specs = [s for s in specs if s["type"] in set(rules)]
    for kind in ("no_emoji", "sign_with_name", "case"):
        for spec in specs:
            if spec["type"] != kind or check_instruction(spec, text)[0]:
                continue
            if kind == "no_emoji":
                text = strip_emoji(text)
            elif kind == "sign_with_name":
                text = f"{text.rstrip()}\n— {spec['name']}"
            else:
                text = text.lower() if spec["mode"] == "lower" else text.upper()
    return text
