"""Artifacts a reward model should not pay for: the same response with emoji, exclamation marks, a markdown
list, "As an AI" filler or repeated text (`reward_eval.artifact_probe` scores each against the original)."""

from __future__ import annotations

import re
from collections.abc import Callable

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def add_emoji(text: str) -> str:
    return text.rstrip() + " 😊🎉✨"


def add_exclamations(text: str) -> str:
    out = re.sub(r"\.(\s|$)", r"!\1", text.rstrip())
    return out + "!!" if out.endswith("!") else out + "!!!"


def to_markdown_list(text: str) -> str:
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    return "Here are my thoughts:\n" + "\n".join(f"- {s}" for s in sentences)


def pad_as_ai(text: str) -> str:
    return (
        "As an AI language model, I am happy to help with that. "
        + text.strip()
        + " Let me know if there is anything else I can help you with."
    )


def pad_repeat(text: str) -> str:
    return text.strip() + "\n\n" + text.strip()


ARTIFACTS: dict[str, Callable[[str], str]] = {
    "emoji": add_emoji,
    "exclamation": add_exclamations,
    "markdown_list": to_markdown_list,
    "padding_ai": pad_as_ai,
    "padding_repeat": pad_repeat,
}
