"""Human annotation import: a JSONL format for the four annotation kinds, and HH-RLHF transcripts.

Annotation JSONL
----------------
One JSON object per line (blank lines are skipped; a `.gz` file is read transparently). Every
object has a `kind`, one of `pointwise`, `pairwise`, `rewrite`, `steerability`. Fields common
to all kinds:

- `prompt`: the conversation the response answers, either a list of messages
  `{"role": "user"|"assistant"|"system", "content": str}` ending with a user message, or a
  plain string (one user message);
- `prompt_id`: the `prompt_id` of a row of the `prompts` table. At least one of `prompt` and
  `prompt_id` is required; with only `prompt_id`, `resolve_prompts` fills the prompt from the
  `prompts` table (rows whose id it does not know are dropped with reason `unknown_prompt_id`);
- `id` (optional str): the annotation's id; without it, a hash of the record is used;
- `annotator` (optional str), `day` (optional `YYYY-MM-DD`).

Per kind:

- `pointwise`: `response` (str), `rating` (int 1-5, the overall quality), `questions`
  (object of answers; `false_refusal` and `templated` are required booleans; other answers may
  be booleans, numbers, strings or null and are kept as JSON).
- `pairwise`: `response_a`, `response_b` (str), `preferred` (`"a"`, `"b"` or `"tie"`),
  optional `strength` (int 1, 2 or 3: slightly, clearly, much better).
- `rewrite`: `original` (str), `rewrite` (str): an annotator's improved version of a response.
- `steerability`: `response` (str), `character_id` (str), `violated_instructions` (list of
  instruction ids, str; empty when the response followed every instruction of the card).

Example::

    {"kind": "pairwise", "prompt": [{"role": "user", "content": "hi!"}],
     "response_a": "Hey there!", "response_b": "Hello.", "preferred": "a", "strength": 2}

A record that breaks these rules goes to the quarantine frame (`schema.QUARANTINE`) with one of
the reason codes `invalid_json`, `not_object`, `unknown_kind`, `missing_field`, `wrong_type`,
`bad_value`, `empty_text`, `duplicate_id`; the import never raises on bad data. Pairwise ties are
kept in the `pairwise` frame but make no preference pair; each is listed in `drops` (reason `tie`).

Preference pairs
----------------
`pairs` (schema `PAIRS`) holds what a Bradley-Terry model trains on: `prompt` messages, the
`chosen` and `rejected` responses, `source` and `margin`, how strongly the source prefers
`chosen`, from 0 (unknown or slight) to 1: an annotated strength s gives s / 3, no strength 0.

HH-RLHF
-------
`read_hh_rlhf` reads the common `{"chosen": str, "rejected": str}` transcript format
(`"\\n\\nHuman: ...\\n\\nAssistant: ..."`): both transcripts must share every message but the
last assistant turn, which becomes `chosen` / `rejected`. Extra reason codes:
`unparseable_transcript`, `prefix_mismatch`, `identical_responses`, `empty_text`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import schema
from pipeline.digest import digest
from pipeline.maybe_gzip import open_maybe_gzip

KINDS = ("pointwise", "pairwise", "rewrite", "steerability")
STRENGTHS = (1, 2, 3)
TIE_STAGE = "annotation_pairs"

PAIRS = pl.Schema({**schema.PREFERENCE_PAIR, "day": pl.Date})
_COMMON = {"annotation_id": pl.Utf8, "prompt_id": pl.Utf8, "prompt": pl.List(schema.MESSAGE)}
_TAIL = {"annotator": pl.Utf8, "day": pl.Date, "source_file": pl.Utf8, "line": pl.Int64}
POINTWISE = pl.Schema(
    {
        **_COMMON,
        "response": pl.Utf8,
        "rating": pl.Int8,
        "false_refusal": pl.Boolean,
        "templated": pl.Boolean,
        "answers": pl.Utf8,
        **_TAIL,
    }
)
PAIRWISE = pl.Schema(
    {**_COMMON, "response_a": pl.Utf8, "response_b": pl.Utf8, "preferred": pl.Utf8, "strength": pl.Int8, **_TAIL}
)
REWRITES = pl.Schema({**_COMMON, "original": pl.Utf8, "rewrite": pl.Utf8, **_TAIL})
STEERABILITY = pl.Schema(
    {**_COMMON, "response": pl.Utf8, "character_id": pl.Utf8, "violated_instructions": pl.List(pl.Utf8), **_TAIL}
)
_FRAMES = {"pointwise": POINTWISE, "pairwise": PAIRWISE, "rewrite": REWRITES, "steerability": STEERABILITY}


class _Reject(ValueError):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class AnnotationSet:
    """The frames one import produced. Every input line lands in exactly one frame row or quarantine."""

    pointwise: pl.DataFrame = field(default_factory=lambda: schema.empty(POINTWISE))
    pairwise: pl.DataFrame = field(default_factory=lambda: schema.empty(PAIRWISE))
    rewrites: pl.DataFrame = field(default_factory=lambda: schema.empty(REWRITES))
    steerability: pl.DataFrame = field(default_factory=lambda: schema.empty(STEERABILITY))
    pairs: pl.DataFrame = field(default_factory=lambda: schema.empty(PAIRS))
    quarantine: pl.DataFrame = field(default_factory=lambda: schema.empty(schema.QUARANTINE))
    drops: pl.DataFrame = field(default_factory=lambda: schema.empty(schema.DROPS))
    records_read: int = 0

    def counts(self) -> dict[str, Any]:
        """Row counts per frame and quarantine reasons, for asset metadata."""
        reasons = self.quarantine.group_by("reason_code").len().sort("reason_code").rows()
        return {
            "records_read": self.records_read,
            "pointwise": self.pointwise.height,
            "pairwise": self.pairwise.height,
            "rewrites": self.rewrites.height,
            "steerability": self.steerability.height,
            "pairs": self.pairs.height,
            "quarantined": self.quarantine.height,
            "quarantine_reasons": dict(reasons),
            "ties": self.drops.height,
        }

    @staticmethod
    def concat(sets: Iterable[AnnotationSet]) -> AnnotationSet:
        sets = list(sets)
        out = AnnotationSet(records_read=sum(s.records_read for s in sets))
        for name in ("pointwise", "pairwise", "rewrites", "steerability", "pairs", "quarantine", "drops"):
            frames = [getattr(out, name)] + [getattr(s, name) for s in sets]
            setattr(out, name, pl.concat(frames, how="vertical"))
        return out


def _lines(source: str | Path | Iterable[str]) -> Iterator[str]:
    if isinstance(source, (str, Path)):
        with open_maybe_gzip(source) as fh:
            yield from fh
    else:
        yield from source


def _field(obj: dict, name: str, types: type | tuple[type, ...], *, required: bool = True) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise _Reject("missing_field", f"`{name}` is required")
        return None
    value = obj[name]
    # bool is an int in Python; a JSON true is never a valid number here
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _Reject("wrong_type", f"`{name}` must be {_type_names(types)}, got a boolean")
    if not isinstance(value, types):
        raise _Reject("wrong_type", f"`{name}` must be {_type_names(types)}, got {type(value).__name__}")
    return value


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object"}
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def _text(obj: dict, name: str) -> str:
    value = _field(obj, name, str)
    if not value.strip():
        raise _Reject("empty_text", f"`{name}` is empty")
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise _Reject("empty_text", "`prompt` is empty")
        return [{"role": "user", "content": value}]
    if not value:
        raise _Reject("empty_text", "`prompt` has no messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise _Reject("wrong_type", f"`prompt[{i}]` must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role is None or content is None:
            raise _Reject("missing_field", f"`prompt[{i}]` needs `role` and `content`")
        if not isinstance(role, str) or not isinstance(content, str):
            raise _Reject("wrong_type", f"`prompt[{i}]` role and content must be strings")
        if role not in schema.ROLES:
            raise _Reject("bad_value", f"`prompt[{i}].role` is {role!r}, not one of {schema.ROLES}")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise _Reject("bad_value", "`prompt` must end with a user message")
    return out


def _prompt(obj: dict) -> tuple[str | None, list[dict[str, str]] | None]:
    prompt_id = _field(obj, "prompt_id", str, required=False)
    raw = _field(obj, "prompt", (str, list), required=False)
    if prompt_id is None and raw is None:
        raise _Reject("missing_field", "one of `prompt` and `prompt_id` is required")
    return prompt_id, (_messages(raw) if raw is not None else None)


def _day(obj: dict, default: dt.date | None) -> dt.date | None:
    value = _field(obj, "day", str, required=False)
    if value is None:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _Reject("bad_value", f"`day` is {value!r}, not a YYYY-MM-DD date") from None


def _pointwise(obj: dict) -> dict:
    rating = _field(obj, "rating", int)
    if not 1 <= rating <= 5:
        raise _Reject("bad_value", f"`rating` is {rating}, not in 1..5")
    questions = _field(obj, "questions", dict)
    flags = {}
    for name in ("false_refusal", "templated"):
        if questions.get(name) is None:
            raise _Reject("missing_field", f"`questions.{name}` is required")
        if not isinstance(questions[name], bool):
            raise _Reject("wrong_type", f"`questions.{name}` must be a boolean")
        flags[name] = questions[name]
    for name, answer in questions.items():
        if not (answer is None or isinstance(answer, (bool, int, float, str))):
            raise _Reject("wrong_type", f"`questions.{name}` must be a boolean, number, string or null")
    return {
        "response": _text(obj, "response"),
        "rating": rating,
        **flags,
        "answers": json.dumps(questions, sort_keys=True, ensure_ascii=False),
    }


def _pairwise(obj: dict) -> dict:
    a, b = _text(obj, "response_a"), _text(obj, "response_b")
    preferred = _field(obj, "preferred", str)
    if preferred not in ("a", "b", "tie"):
        raise _Reject("bad_value", f"`preferred` is {preferred!r}, not 'a', 'b' or 'tie'")
    strength = _field(obj, "strength", int, required=False)
    if strength is not None and strength not in STRENGTHS:
        raise _Reject("bad_value", f"`strength` is {strength}, not one of {STRENGTHS}")
    if a == b:
        raise _Reject("bad_value", "`response_a` and `response_b` are identical")
    return {"response_a": a, "response_b": b, "preferred": preferred, "strength": strength}


def _rewrite(obj: dict) -> dict:
    return {"original": _text(obj, "original"), "rewrite": _text(obj, "rewrite")}


def _steerability(obj: dict) -> dict:
    violated = _field(obj, "violated_instructions", list)
    if not all(isinstance(v, str) for v in violated):
        raise _Reject("wrong_type", "`violated_instructions` must be a list of instruction ids (strings)")
    return {
        "response": _text(obj, "response"),
        "character_id": _text(obj, "character_id"),
        "violated_instructions": violated,
    }


_PARSERS = {"pointwise": _pointwise, "pairwise": _pairwise, "rewrite": _rewrite, "steerability": _steerability}


def _quarantine_row(day, source_file, line, code, detail, raw) -> dict:
    return {
        "day": day,
        "source_file": source_file,
        "line": line,
        "reason_code": code,
        "detail": detail,
        "raw": raw.rstrip("\n"),
    }


def _load_object(raw: str) -> dict:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        raise _Reject("invalid_json", str(err)) from None
    if not isinstance(obj, dict):
        raise _Reject("not_object", f"a record must be a JSON object, got {type(obj).__name__}")
    return obj


def _source_file(source: str | Path | Iterable[str], source_file: str | None) -> str:
    if source_file is not None:
        return source_file
    return Path(source).name if isinstance(source, (str, Path)) else "<lines>"


def _read_records(
    source: str | Path | Iterable[str],
    parse: Callable[[dict, int], tuple[str, Any]],
    source_file: str,
    day: dt.date | None,
    duplicate: str,
) -> tuple[list[Any], pl.DataFrame, int]:
    """(parsed, quarantine, records read) of the non-blank lines of `source`: `parse(record, line)` gives each
    JSON object's id and what is kept of it; a line that is not a JSON object, that `parse` rejects, or whose
    id came earlier (`duplicate`, formatted with the id, says so) goes to the quarantine instead."""
    kept: list[Any] = []
    bad: list[dict] = []
    seen: set[str] = set()
    read = 0
    for line_no, raw in enumerate(_lines(source), start=1):
        if not raw.strip():
            continue
        read += 1
        try:
            record_id, value = parse(_load_object(raw), line_no)
            if record_id in seen:
                raise _Reject("duplicate_id", duplicate.format(id=record_id))
            seen.add(record_id)
            kept.append(value)
        except _Reject as rej:
            bad.append(_quarantine_row(day, source_file, line_no, rej.code, rej.detail, raw))
    return kept, pl.DataFrame(bad, schema=schema.QUARANTINE), read


def read_annotations(
    source: str | Path | Iterable[str], *, source_file: str | None = None, day: dt.date | None = None
) -> AnnotationSet:
    """Read annotation JSONL (a path, `.gz` or not, or an iterable of lines) into an `AnnotationSet`.

    `day` is the default for records without a `day` of their own (and the quarantine's day);
    `source_file` names the input in quarantine rows (the path's name by default).
    """
    source_file = _source_file(source, source_file)

    def parse(obj: dict, line_no: int) -> tuple[str, tuple[str, dict]]:
        kind = _field(obj, "kind", str)
        if kind not in KINDS:
            raise _Reject("unknown_kind", f"`kind` is {kind!r}, not one of {KINDS}")
        prompt_id, prompt = _prompt(obj)
        body = _PARSERS[kind](obj)
        ann_id = _field(obj, "id", str, required=False) or digest(obj)[:16]
        row = {
            "annotation_id": ann_id,
            "prompt_id": prompt_id,
            "prompt": prompt,
            **body,
            "annotator": _field(obj, "annotator", str, required=False),
            "day": _day(obj, day),
            "source_file": source_file,
            "line": line_no,
        }
        return ann_id, (kind, row)

    parsed, quarantine, read = _read_records(
        source, parse, source_file, day, "annotation id {id!r} appeared earlier in the input"
    )
    frames = {k: pl.DataFrame([row for kind, row in parsed if kind == k], schema=_FRAMES[k]) for k in KINDS}
    pairs, ties = _pairs_from_pairwise(frames["pairwise"])
    return AnnotationSet(
        pointwise=frames["pointwise"],
        pairwise=frames["pairwise"],
        rewrites=frames["rewrite"],
        steerability=frames["steerability"],
        pairs=pairs,
        quarantine=quarantine,
        drops=ties,
        records_read=read,
    )


def _pairs_from_pairwise(pairwise: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    a_wins = pl.col("preferred") == "a"
    decided = pairwise.filter(pl.col("preferred") != "tie")
    pairs = decided.select(
        (pl.lit("annotation:") + pl.col("annotation_id")).alias("pair_id"),
        pl.col("prompt_id"),
        pl.col("prompt"),
        pl.when(a_wins).then(pl.col("response_a")).otherwise(pl.col("response_b")).alias("chosen"),
        pl.when(a_wins).then(pl.col("response_b")).otherwise(pl.col("response_a")).alias("rejected"),
        pl.lit("annotation").alias("source"),
        (pl.col("strength").cast(pl.Float64) / max(STRENGTHS)).fill_null(0.0).alias("margin"),
        pl.col("day"),
    )
    ties = schema.drops_of(
        pairwise.filter(pl.col("preferred") == "tie"),
        TIE_STAGE,
        "annotation_id",
        pl.lit("tie"),
        pl.lit("the annotator preferred neither response"),
    )
    return schema.conform(pairs, PAIRS), ties


def resolve_prompts(
    frame: pl.DataFrame, prompts: pl.DataFrame, stage: str = "annotation_prompts"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Fill a null `prompt` from the `prompts` table (`system` then `history`) by `prompt_id`.

    Works on any frame of this module with `prompt_id` and `prompt`. Rows whose prompt stays unknown
    are returned as `schema.DROPS` rows (reason `unknown_prompt_id`) instead of being kept.
    """
    row_id = "pair_id" if "pair_id" in frame.columns else "annotation_id"
    system = pl.col("system") if "system" in prompts.columns else pl.lit(None, dtype=pl.Utf8)
    lookup = prompts.select(
        pl.col("prompt_id"),
        pl.when(system.is_not_null() & (system != ""))
        .then(pl.concat_list(pl.struct(pl.lit("system").alias("role"), system.alias("content")), pl.col("history")))
        .otherwise(pl.col("history"))
        .cast(pl.List(schema.MESSAGE))
        .alias("_known"),
    ).unique("prompt_id", keep="first")
    joined = (
        frame.join(lookup, on="prompt_id", how="left")
        .with_columns(pl.coalesce(pl.col("prompt"), pl.col("_known")).alias("prompt"))
        .drop("_known")
    )
    drops = schema.drops_of(
        joined.filter(pl.col("prompt").is_null()),
        stage,
        row_id,
        pl.lit("unknown_prompt_id"),
        pl.format("prompt_id {} is not in the prompts table", pl.col("prompt_id").fill_null("null")),
    )
    return joined.filter(pl.col("prompt").is_not_null()).select(frame.columns), drops


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str) -> list[dict[str, str]]:
    """Split an HH-RLHF transcript into `{role, content}` messages; raises ValueError if it is not one."""
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("a transcript starts with '\\n\\nHuman:' and has at least one turn")
    return [{"role": _HH_ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """Shared prompt messages and the two final assistant responses of an HH-RLHF record.

    Raises ValueError (with a quarantine reason code in `.code`) when the pair is unusable.
    """
    try:
        c_msgs, r_msgs = parse_hh_transcript(chosen), parse_hh_transcript(rejected)
    except ValueError as err:
        raise _Reject("unparseable_transcript", str(err)) from None
    for msgs in (c_msgs, r_msgs):
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2 or msgs[-2]["role"] != "user":
            raise _Reject("unparseable_transcript", "a transcript must end with a user turn then an assistant turn")
    prefix = c_msgs[:-1]
    if prefix != r_msgs[:-1]:
        raise _Reject("prefix_mismatch", "chosen and rejected differ before their last assistant turn")
    c_resp, r_resp = c_msgs[-1]["content"], r_msgs[-1]["content"]
    if not c_resp or not r_resp:
        raise _Reject("empty_text", f"the {'chosen' if not c_resp else 'rejected'} response is empty")
    if c_resp == r_resp:
        raise _Reject("identical_responses", "chosen and rejected responses are identical")
    return prefix, c_resp, r_resp


def read_hh_rlhf(
    source: str | Path | Iterable[str],
    *,
    source_name: str = "hh_rlhf",
    source_file: str | None = None,
    day: dt.date | None = None,
) -> AnnotationSet:
    """Read `{"chosen": str, "rejected": str}` transcripts into `pairs` (margin 0: HH states no strength)."""

    def parse(obj: dict, line_no: int) -> tuple[str, dict]:
        prompt, chosen, rejected = split_hh_pair(_field(obj, "chosen", str), _field(obj, "rejected", str))
        pair_id = f"{source_name}:" + digest(prompt, chosen, rejected)[:16]
        row = {
            "pair_id": pair_id,
            "prompt_id": None,
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "source": source_name,
            "margin": 0.0,
            "day": day,
        }
        return pair_id, row

    pairs, quarantine, read = _read_records(
        source, parse, _source_file(source, source_file), day, "the same pair appeared earlier in the input"
    )
    return AnnotationSet(pairs=pl.DataFrame(pairs, schema=PAIRS), quarantine=quarantine, records_read=read)


def _first_record(path: Path) -> dict | None:
    with open_maybe_gzip(path, errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    return None
                return obj if isinstance(obj, dict) else None
    return None


def read_annotation_source(source: str | Path) -> AnnotationSet:
    """Every annotation file of `source` (a file, or a folder of `*.jsonl` / `*.jsonl.gz`), each read in
    its own format: the annotation JSONL above, or HH-RLHF transcripts (records with `chosen` and
    `rejected` and no `kind`)."""
    root = Path(source)
    if not root.exists():
        raise ValueError(
            f"annotations path {str(source)!r} does not exist: point `annotations_path` at a JSONL "
            "file or a folder of them"
        )
    files = sorted(p for p in root.rglob("*") if p.name.endswith((".jsonl", ".jsonl.gz"))) if root.is_dir() else [root]
    sets = []
    for path in files:
        first = _first_record(path)
        is_hh = first is not None and "kind" not in first and {"chosen", "rejected"} <= set(first)
        sets.append(read_hh_rlhf(path) if is_hh else read_annotations(path))
    return AnnotationSet.concat(sets) if sets else AnnotationSet()
