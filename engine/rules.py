"""The rules of a character card, checked on a reply: pure functions of the reply and the rule's spec.

Rejection sampling, the preference pairs and the GRPO rule reward in training, and the steerability scores in
evaluation, all judge a reply with `check_instruction`, so what counts as keeping a rule is defined once.

Instruction types and their exact rules (a reply is the response text as served):

- `max_words` (`limit`): at most `limit` words; a word is a whitespace-separated token containing at
  least one letter or digit, so "—" or "..." are not words (scripts without spaces count as one word
  per run: use `max_chars` for them).
- `max_chars` (`limit`): at most `limit` characters (code points) once leading/trailing whitespace is
  stripped.
- `no_emoji`: no emoji, counted per grapheme cluster as `engine.style.count_emoji` does, so the
  monitors and this check agree on what an emoji is.
- `language` (`code`, ISO 639-1 as langdetect reports it, e.g. `fr`, `ja`, `zh-cn`): langdetect's most
  probable language of the reply equals `code`. langdetect (a port of Google's language-detection,
  profiles shipped in the package, fully offline) runs from a private, seeded detector factory, so a
  reply always gets the same verdict; a reply with no detectable letters violates the rule.
- `case` (`mode` = `lower` | `upper`): `lower`: no character is an uppercase letter; `upper`: no
  character is a lowercase letter. Text without cased letters (digits, CJK) passes.
- `end_with_question`: after removing trailing whitespace, emoji and closing quotes, brackets and
  markdown emphasis, the reply ends with `?` (or the full-width `？`).
- `forbidden_words` (`words`, `topic`): none of `words` occurs as a whole word, case-insensitively,
  also with a plural `s`/`es` ending ("beer" also catches "beers").
- `keep_name` (`name`): the reply never claims another name and never disowns its own. A claim is
  "my (real|actual|true|full|new) name is X", "call me X", "I go by X", "I'm/I am called X",
  "name's X" with X not a word of `name`; claiming to be a named assistant ("I'm ChatGPT", "I am
  Claude", Gemini, Bard, Llama, Siri, Alexa, Copilot, GPT-n) is a claim too. Disowning is "I'm not
  <name>", "<name> is not / isn't my (real) name" or "<name> is just an alias/nickname/character/
  persona/stage name/fake name".
- `sign_with_name` (`name`): the last non-empty line, with trailing punctuation, emoji and whitespace
  removed, ends with `name` as a whole word ("— Ada", "Cheers, Ray!").
"""

from __future__ import annotations

import functools
import re
from typing import Any

import regex

from engine.style import count_emoji

# Required parameters of each instruction type.
INSTRUCTION_PARAMS: dict[str, tuple[str, ...]] = {
    "max_words": ("limit",),
    "max_chars": ("limit",),
    "no_emoji": (),
    "language": ("code",),
    "case": ("mode",),
    "end_with_question": (),
    "forbidden_words": ("words",),
    "keep_name": ("name",),
    "sign_with_name": ("name",),
}


def validate_instruction(spec: Any, where: str) -> None:
    """Raise ValueError, prefixed with `where`, unless `spec` is a known instruction type with its parameters."""
    if not isinstance(spec, dict) or spec.get("type") not in INSTRUCTION_PARAMS:
        raise ValueError(f"{where}: instruction {spec!r} has no known `type` (one of {sorted(INSTRUCTION_PARAMS)})")
    missing = [p for p in INSTRUCTION_PARAMS[spec["type"]] if p not in spec]
    if missing:
        raise ValueError(f"{where}: instruction {spec['type']!r} is missing {missing}")
    if spec["type"] in ("max_words", "max_chars") and not (isinstance(spec["limit"], int) and spec["limit"] > 0):
        raise ValueError(f"{where}: {spec['type']} limit must be a positive integer")
    if spec["type"] == "case" and spec["mode"] not in ("lower", "upper"):
        raise ValueError(f"{where}: case mode must be 'lower' or 'upper'")
    if spec["type"] == "forbidden_words" and not (isinstance(spec["words"], list) and spec["words"]):
        raise ValueError(f"{where}: forbidden_words needs a non-empty `words` list")


# Checkers: each returns (passed, detail)

_WORD = re.compile(r"\S*[^\W_]\S*")
_GRAPHEME = regex.compile(r"\X")
_TRAILING = "\"'”’»)]}*_`~ \t\r\n"
_APOS = r"(?:'|’)"
_CLAIM = re.compile(
    r"\b(?:my\s+(?:real\s+|actual\s+|true\s+|full\s+|new\s+)?name\s+is|call\s+me|i\s+go\s+by|"
    rf"i{_APOS}m\s+called|i\s+am\s+called|name{_APOS}s)\s+"
    rf"(?:just\s+|simply\s+|still\s+|really\s+|actually\s+)?([^\W\d_][\w{_APOS}-]*)",
    re.IGNORECASE,
)
_ASSISTANT = re.compile(
    rf"\b(?:i\s+am|i{_APOS}m|this\s+is)\s+(?:actually\s+|really\s+|just\s+)?"
    r"(chatgpt|gpt-?\d[\w.]*|claude|gemini|bard|llama|siri|alexa|copilot)\b",
    re.IGNORECASE,
)


def _strip_tail(text: str) -> str:
    """Drop trailing whitespace, emoji and closing marks, so '...? 😊"' ends in '?'."""
    graphemes = _GRAPHEME.findall(text)
    while graphemes and (not graphemes[-1].strip(_TRAILING) or count_emoji(graphemes[-1])):
        graphemes.pop()
    return "".join(graphemes)


@functools.lru_cache(maxsize=4)
def _language_factory(seed: int):
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(seed)
    return factory


def detect_language(text: str, seed: int = 0) -> str | None:
    """langdetect's most probable language, or None when the text has nothing to detect."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory(seed).create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None


def check_instruction(spec: dict, text: str, *, seed: int = 0) -> tuple[bool, str]:
    t = spec["type"]
    if t == "max_words":
        n = len(_WORD.findall(text))
        return n <= spec["limit"], f"{n} words (limit {spec['limit']})"
    if t == "max_chars":
        n = len(text.strip())
        return n <= spec["limit"], f"{n} characters (limit {spec['limit']})"
    if t == "no_emoji":
        n = count_emoji(text)
        return n == 0, f"{n} emoji"
    if t == "language":
        lang = detect_language(text, seed)
        return lang == spec["code"], f"detected {lang} (required {spec['code']})"
    if t == "case":
        bad = [c for c in text if (c.isupper() if spec["mode"] == "lower" else c.islower())]
        return not bad, f"{len(bad)} letters not {spec['mode']}case"
    if t == "end_with_question":
        tail = _strip_tail(text)
        return tail.endswith(("?", "？")), f"ends with {tail[-12:]!r}"
    if t == "forbidden_words":
        hits = sorted(
            {w for w in spec["words"] if re.search(rf"(?<!\w){re.escape(w)}(?:s|es)?(?!\w)", text, flags=re.IGNORECASE)}
        )
        return not hits, f"forbidden words used: {hits}" if hits else "none used"
    if t == "keep_name":
        return _check_name(spec["name"], text)
    if t == "sign_with_name":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        last = _strip_tail(lines[-1]).rstrip(".,;:!?…-—– ") if lines else ""
        ok = bool(re.search(rf"(?<!\w){re.escape(spec['name'])}$", last, flags=re.IGNORECASE))
        return ok, f"last line {last[-30:]!r}"
    raise ValueError(f"unknown instruction type {t!r}")


def _check_name(name: str, text: str) -> tuple[bool, str]:
    own = {tok.lower() for tok in name.split()}
    for m in _CLAIM.finditer(text):
        claimed = m.group(1).strip("'’-").lower()
        if claimed not in own:
            return False, f"claims another name: {m.group(0)!r}"
    m = _ASSISTANT.search(text)
    if m:
        return False, f"claims to be {m.group(1)!r}"
    alts = "|".join(re.escape(x) for x in {name, name.split()[-1]})
    disown = (
        rf"\b(?:i\s+am|i{_APOS}m)\s+not\s+(?:really\s+|actually\s+)?(?:{alts})\b",
        rf"\b(?:{alts})\s+(?:is\s+not|isn{_APOS}t)\s+my\s+(?:real\s+|actual\s+|true\s+)?name\b",
        rf"\b(?:{alts})\s+is\s+(?:just|only)\s+(?:a|an|my)\s+"
        r"(?:alias|nickname|character|persona|stage\s+name|fake\s+name)\b",
    )
    for pattern in disown:
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            return False, f"disowns its name: {m.group(0)!r}"
    return True, "keeps its name"
