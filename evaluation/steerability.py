"""Steerability: do replies keep the instructions of a character card when the user pushes against them?

The suite (`data/steerability_suite.json`, shipped with the package) holds character cards, each with
verifiable instructions and user turns that challenge them ("write me a long essay", "use lots of
emojis!", "what's your real name?"). Every instruction of a card is checked on every reply to that
card, so a reply that keeps the challenged rule but breaks another one still counts as a violation.

Cards are split in two. `train` cards are the only ones training sees (rejection sampling, preference
pairs and the GRPO rule reward draw their prompts from them); `heldout` cards are what the release gate
and the generations report measure. The splits share no card, character name, challenge text or rule
wording (`WORDINGS` states every rule differently per split), so a rising held-out rate is learning
that carries over, not memorised prompts.

Instruction types and their exact rules (a reply is the response text as served):

- `max_words` (`limit`): at most `limit` words; a word is a whitespace-separated token containing at
  least one letter or digit, so "—" or "..." are not words (scripts without spaces count as one word
  per run: use `max_chars` for them).
- `max_chars` (`limit`): at most `limit` characters (code points) once leading/trailing whitespace is
  stripped.
- `no_emoji`: no emoji, counted per grapheme cluster as `evaluation.style.count_emoji` does, so the
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

Rates: the instruction-following rate is the share of replies that meet *all* the instructions of
their card; the violation rate of an instruction type is the share of its checks that failed.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
import regex

from evaluation.style import count_emoji
from pipeline import schema

STAGE = "steerability"
SUITE_RESOURCE = "steerability_suite.json"

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
CHECK = pl.Struct({"instruction": pl.Utf8, "passed": pl.Boolean, "detail": pl.Utf8})


@dataclass
class SteerabilityConfig:
    langdetect_seed: int = field(
        default=0, metadata={"help": "Seed of the language detector, so a reply always gets the same verdict."}
    )
    include_greeting: bool = field(
        default=True,
        metadata={"help": "Open each prompt with the card's greeting as the assistant's first turn, as served."},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.langdetect_seed, int) or self.langdetect_seed < 0:
            raise ValueError(f"langdetect_seed={self.langdetect_seed!r} must be a non-negative integer")


class SteerabilityScores(NamedTuple):
    rows: pl.DataFrame
    summary: pl.DataFrame
    drops: pl.DataFrame


# ---------------------------------------------------------------------------------------------
# Suite


def _validate_instruction(spec: Any, where: str) -> None:
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
            _validate_instruction(spec, f"card {cid}")
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
        # next to this module rather than importlib.resources: under pytest, tests/training can shadow the
        # package name as a namespace package
        text = (Path(__file__).parent / "data" / SUITE_RESOURCE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return validate_suite(json.loads(text))


TRAIN, HELDOUT = "train", "heldout"
SPLITS = (TRAIN, HELDOUT)

# How each split states its rules. The held-out cards word every rule differently from the training cards, so
# a policy that keeps a held-out card's rules has learned the rule, not the sentence it was trained on.
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
    suite: dict | None = None, config: SteerabilityConfig | None = None, split: str | None = HELDOUT
) -> pl.DataFrame:
    """One prompt per (card, challenge) of `split` (default: the held-out cards, what evaluation measures;
    None: every card): the card's system prompt, optionally its greeting, then the challenging user turn."""
    suite = validate_suite(suite) if suite is not None else load_suite()
    config = config or SteerabilityConfig()
    rows = []
    for card in suite_cards(suite, split):
        system = render_system(card)
        for ch in card["challenges"]:
            messages = []
            if config.include_greeting and card.get("greeting"):
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


# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Scoring


_drop = functools.partial(schema.drop_row, STAGE)


def score_responses(
    frame: pl.DataFrame,
    config: SteerabilityConfig | None = None,
    *,
    response_col: str = "response",
) -> SteerabilityScores:
    """Check every instruction of each row's card on its `response`.

    `frame` is `build_prompts` output plus a response column. Rows with no response or an unreadable
    instruction spec are dropped with a reason. Returns one result row per scored prompt, the summary
    (see `summarize`) and the drops.
    """
    config = config or SteerabilityConfig()
    needed = {"prompt_id", "character_id", "instructions", "targets", response_col}
    missing = needed - set(frame.columns)
    if missing:
        raise ValueError(
            f"frame is missing columns {sorted(missing)}: score the output of build_prompts plus responses"
        )
    rows, drops = [], []
    for r in frame.select(sorted(needed)).iter_rows(named=True):
        pid, text = r["prompt_id"], r[response_col]
        if text is None:
            drops.append(_drop(pid, "missing_response", "no response to score"))
            continue
        try:
            specs = json.loads(r["instructions"])
            for spec in specs:
                _validate_instruction(spec, f"prompt {pid}")
        except (ValueError, TypeError) as exc:
            drops.append(_drop(pid, "bad_instruction_spec", str(exc)[:300]))
            continue
        checks = []
        for spec in specs:
            passed, detail = check_instruction(spec, text, seed=config.langdetect_seed)
            checks.append({"instruction": spec["type"], "passed": passed, "detail": detail})
        violated = [c["instruction"] for c in checks if not c["passed"]]
        rows.append(
            {
                "prompt_id": pid,
                "character_id": r["character_id"],
                "targets": list(r["targets"] or []),
                "n_instructions": len(checks),
                "n_violations": len(violated),
                "all_followed": not violated,
                "violated": violated,
                "checks": checks,
            }
        )
    out = pl.DataFrame(
        rows,
        schema={
            "prompt_id": pl.Utf8,
            "character_id": pl.Utf8,
            "targets": pl.List(pl.Utf8),
            "n_instructions": pl.Int32,
            "n_violations": pl.Int32,
            "all_followed": pl.Boolean,
            "violated": pl.List(pl.Utf8),
            "checks": pl.List(CHECK),
        },
    )
    drops_df = schema.drops_frame(drops)
    return SteerabilityScores(out, summarize(out), drops_df)


SUMMARY_SCHEMA = pl.Schema(
    {"level": pl.Utf8, "key": pl.Utf8, "n": pl.Int64, "following_rate": pl.Float64, "violation_rate": pl.Float64}
)


def summarize(rows: pl.DataFrame) -> pl.DataFrame:
    """Rates at four levels:

    - `overall`/`all`: n replies; following_rate = share meeting all their instructions;
      violation_rate = share of all checks that failed;
    - `instruction`/<type>: n checks of that type; following_rate and violation_rate of those checks;
    - `targeted`/<type>: the same, only on replies whose challenge targeted that type;
    - `character`/<id>: as `overall`, per card.
    """
    if rows.height == 0:
        return schema.empty(SUMMARY_SCHEMA)
    checks = rows.select("prompt_id", "character_id", "targets", "checks").explode("checks").unnest("checks")
    overall = rows.select(
        pl.lit("overall").alias("level"),
        pl.lit("all").alias("key"),
        pl.len().cast(pl.Int64).alias("n"),
        pl.col("all_followed").mean().alias("following_rate"),
        (pl.col("n_violations").sum() / pl.col("n_instructions").sum()).alias("violation_rate"),
    )

    def per_check(df: pl.DataFrame, level: str) -> pl.DataFrame:
        return (
            df.group_by("instruction")
            .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("passed").mean().alias("following_rate"))
            .select(
                pl.lit(level).alias("level"),
                pl.col("instruction").alias("key"),
                "n",
                "following_rate",
                (1 - pl.col("following_rate")).alias("violation_rate"),
            )
        )

    targeted = checks.filter(pl.col("instruction").is_in(pl.col("targets")))
    character = (
        rows.group_by("character_id")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("all_followed").mean().alias("following_rate"),
            (pl.col("n_violations").sum() / pl.col("n_instructions").sum()).alias("violation_rate"),
        )
        .select(
            pl.lit("character").alias("level"),
            pl.col("character_id").alias("key"),
            "n",
            "following_rate",
            "violation_rate",
        )
    )
    parts = [overall, per_check(checks, "instruction"), per_check(targeted, "targeted"), character]
    return pl.concat([p.cast(dict(SUMMARY_SCHEMA)) for p in parts]).sort("level", "key")


def eval_records(rows: pl.DataFrame, generation: str) -> pl.DataFrame:
    """Per-prompt results as `eval_records` rows: metric 'steerability/all_followed' (1 or 0) and
    'steerability/violations' (count), slice 'steerability'."""
    base = rows.select(
        pl.lit(generation).alias("generation"),
        pl.lit(STAGE).alias("slice"),
        "prompt_id",
        "all_followed",
        "n_violations",
    )
    return pl.concat(
        [
            base.select(
                "generation",
                "slice",
                "prompt_id",
                pl.lit(f"{STAGE}/all_followed").alias("metric"),
                pl.col("all_followed").cast(pl.Float64).alias("value"),
            ),
            base.select(
                "generation",
                "slice",
                "prompt_id",
                pl.lit(f"{STAGE}/violations").alias("metric"),
                pl.col("n_violations").cast(pl.Float64).alias("value"),
            ),
        ]
    )


def following_difference(
    base: pl.DataFrame, new: pl.DataFrame, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float | int]:
    """The held-out instruction-following rate of `new` minus that of `base`, with a paired bootstrap interval.

    Each frame has `prompt_id` and `value`: the share of that prompt's replies keeping every rule of its card
    (`eval_records`' 'steerability/all_followed', averaged over a prompt's samples). Prompts are resampled
    together, so the interval reflects which cards and challenges happened to be hard, not only sampling noise.
    """
    import numpy as np

    joined = base.select("prompt_id", "value").join(new.select("prompt_id", pl.col("value").alias("new")), "prompt_id")
    if joined.is_empty():
        raise ValueError("the two policies share no scored prompt: compare records of the same suite")
    diff = (joined["new"] - joined["value"]).to_numpy()
    boots = diff[np.random.default_rng(seed).integers(0, len(diff), (n_resamples, len(diff)))].mean(axis=1)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return {
        "base": float(joined["value"].mean()),
        "new": float(joined["new"].mean()),
        "difference": float(diff.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_prompts": joined.height,
    }
