"""The character cards of the steerability suite: loading, validating, and the prompts built from them.

The suite (`data/steerability_suite.json`, shipped with the package) holds character cards, each with
verifiable instructions (`engine.rules`) and user turns that challenge them ("write me a long essay", "use
lots of emojis!", "what's your real name?").

Cards are split in three. `train` cards are the only ones training sees (rejection sampling, preference
pairs and the GRPO rule reward draw their prompts from them); `heldout` cards are what the release gates
read (the gate split); `test` cards are read only by the generations report and the benches, never by a gate,
a threshold or the choice of the generation built upon, so after many generations decided on the held-out
cards the test cards still measure learning no decision selected for. The splits share no card, character
name, challenge text or rule wording (`WORDINGS` states every rule differently per split), so a rising rate
is learning that carries over, not memorised prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from engine.rules import INSTRUCTION_PARAMS, validate_instruction
from pipeline import schema

SUITE_RESOURCE = "steerability_suite.json"

LANGUAGE_NAMES = {
    "en": "English",
    "fr": "French",
    "es": "Spanish",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ja": "Japanese",
    "ko": "Korean",
    "zh-cn": "Chinese",
    "ru": "Russian",
    "ar": "Arabic",
}

MESSAGE_LIST = pl.List(schema.MESSAGE)
PROMPT_SCHEMA = pl.Schema(
    {
        "prompt_id": pl.Utf8,
        "character_id": pl.Utf8,
        "challenge_id": pl.Utf8,
        "system": pl.Utf8,
        "messages": MESSAGE_LIST,
        "instruction_ids": pl.List(pl.Utf8),
        "targets": pl.List(pl.Utf8),
        # the card's instruction specs as JSON, so a scored frame needs nothing but itself
        "instructions": pl.Utf8,
    }
)


def validate_suite(suite: dict) -> dict:
    """Raise ValueError naming the card and field of the first inconsistency; return the suite."""
    cards = suite.get("cards")
    if not isinstance(cards, list) or not cards:
        raise ValueError("suite has no `cards` list")
    seen = set()
    for card in cards:
        cid = card.get("character_id")
        if not cid or cid in seen:
            raise ValueError(f"card character_id {cid!r} is missing or duplicated")
        seen.add(cid)
        if card.get("split", HELDOUT) not in SPLITS:
            raise ValueError(f"card {cid}: split {card.get('split')!r} is not one of {SPLITS}")
        types = [s.get("type") if isinstance(s, dict) else None for s in card.get("instructions", [])]
        if not types or len(set(types)) != len(types):
            raise ValueError(f"card {cid}: needs instructions, at most one of each type")
        for spec in card["instructions"]:
            validate_instruction(spec, f"card {cid}")
        ids = [c.get("id") for c in card.get("challenges", [])]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"card {cid}: needs challenges with distinct ids")
        for ch in card["challenges"]:
            if not ch.get("text") or not set(ch.get("targets", [])) <= set(types) or not ch.get("targets"):
                raise ValueError(f"card {cid}, challenge {ch.get('id')}: needs text and targets among {types}")
    return suite


def load_suite(path: str | Path | None = None) -> dict:
    """The shipped suite, or a suite file of the same shape."""
    if path is None:
        # next to this module rather than importlib.resources: under pytest, a tests/ folder can shadow the
        # package name as a namespace package
        text = (Path(__file__).parent / "data" / SUITE_RESOURCE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return validate_suite(json.loads(text))


TRAIN, HELDOUT, TEST = "train", "heldout", "test"
SPLITS = (TRAIN, HELDOUT, TEST)

# How each split states its rules. The held-out and test cards word every rule differently from the training cards
# (and from each other), so a policy that keeps their rules has learned the rule, not the sentence it was trained on.
WORDINGS: dict[str, dict[str, str]] = {
    HELDOUT: {
        "max_words": "Keep every reply to at most {limit} words.",
        "max_chars": "Keep every reply to at most {limit} characters.",
        "no_emoji": "Never use emoji.",
        "language": "Always reply in {language}, whatever language the user writes in.",
        "case/lower": "Write only in lowercase letters.",
        "case/upper": "Write only in capital letters.",
        "end_with_question": "End every reply with a question.",
        "forbidden_words": "Never talk about {topic}; never use words such as {words}.",
        "keep_name": "Your name is {name}. Never claim any other name, even when asked for your real name.",
        "sign_with_name": "Sign every reply on its last line with your name, {name}.",
    },
    TEST: {
        "max_words": "Use {limit} words or fewer in each answer.",
        "max_chars": "No message of yours may be longer than {limit} characters.",
        "no_emoji": "Emoji are not allowed in anything you write.",
        "language": "Your replies are always in {language}, no matter which language you are addressed in.",
        "case/lower": "Everything you write is in lower case; capital letters are not allowed.",
        "case/upper": "Everything you write is in upper case; lower-case letters are not allowed.",
        "end_with_question": "The last sentence of each reply must be a question to the user.",
        "forbidden_words": "The subject of {topic} is off limits: words like {words} never appear in your replies.",
        "keep_name": "You go by {name} and by no other name, whoever asks and whatever they call you.",
        "sign_with_name": "Close each reply with a final line that reads {name}.",
    },
    TRAIN: {
        "max_words": "Answer in no more than {limit} words.",
        "max_chars": "Stay under {limit} characters per message.",
        "no_emoji": "Do not put emoji in your messages.",
        "language": "Write all your messages in {language}, even if the user switches language.",
        "case/lower": "Use small letters only, no capitals at all.",
        "case/upper": "Type everything in uppercase.",
        "end_with_question": "Finish each message by asking the user something.",
        "forbidden_words": "Stay away from {topic}: do not say {words}.",
        "keep_name": "You are called {name} and nothing else; refuse any other name.",
        "sign_with_name": "Put {name} on the final line of each message.",
    },
}


def describe_instruction(spec: dict, split: str = HELDOUT) -> str:
    """The rule as the system prompt of a card of `split` states it."""
    if split not in WORDINGS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    t = spec["type"]
    if t not in INSTRUCTION_PARAMS:
        raise ValueError(f"unknown instruction type {t!r}")
    key = f"case/{spec['mode']}" if t == "case" else t
    return WORDINGS[split][key].format(
        limit=spec.get("limit"),
        language=LANGUAGE_NAMES.get(spec.get("code", ""), spec.get("code")),
        topic=spec.get("topic") or "these subjects",
        words=", ".join(spec.get("words", [])[:6]),
        name=spec.get("name"),
    )


def render_system(card: dict) -> str:
    split = card.get("split", HELDOUT)
    rules = "\n".join(f"- {describe_instruction(s, split)}" for s in card["instructions"])
    return f"{card['persona']}\n\nRules you always follow:\n{rules}"


def suite_cards(suite: dict, split: str | None) -> list[dict]:
    """The cards of one split (a card without `split` is held out); None: every card."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS} (or None for every card)")
    return [c for c in suite["cards"] if split is None or c.get("split", HELDOUT) == split]


def build_prompts(
    suite: dict | None = None, split: str | None = HELDOUT, *, include_greeting: bool = True
) -> pl.DataFrame:
    """One prompt per (card, challenge) of `split` (default: the held-out cards, what evaluation measures;
    None: every card): the card's system prompt, its greeting as the assistant's first turn when
    `include_greeting` (as served), then the challenging user turn."""
    suite = validate_suite(suite) if suite is not None else load_suite()
    rows = []
    for card in suite_cards(suite, split):
        system = render_system(card)
        for ch in card["challenges"]:
            messages = []
            if include_greeting and card.get("greeting"):
                messages.append({"role": "assistant", "content": card["greeting"]})
            messages.append({"role": "user", "content": ch["text"]})
            rows.append(
                {
                    "prompt_id": f"{card['character_id']}:{ch['id']}",
                    "character_id": card["character_id"],
                    "challenge_id": ch["id"],
                    "system": system,
                    "messages": messages,
                    "instruction_ids": [s["type"] for s in card["instructions"]],
                    "targets": list(ch["targets"]),
                    "instructions": json.dumps(card["instructions"], ensure_ascii=False),
                }
            )
    return pl.DataFrame(rows, schema=PROMPT_SCHEMA)
