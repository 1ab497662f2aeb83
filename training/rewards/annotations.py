"""Human annotation import: a JSONL format for the four annotation kinds.

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

The frames it yields are `training.rewards.annotation_set`'s; HH-RLHF transcripts are read by
`training.rewards.hh_rlhf`, and `read_annotation_source` reads a folder holding either format.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import schema
from pipeline.digest import digest
from pipeline.maybe_gzip import open_maybe_gzip
from training.rewards.annotation_records import Reject, checked_field, read_records, source_label, text_field
from training.rewards.annotation_set import FRAMES, KINDS, PAIRS, STRENGTHS, TIE_STAGE, AnnotationSet
from training.rewards.hh_rlhf import read_hh_rlhf


def _messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise Reject("empty_text", "`prompt` is empty")
        return [{"role": "user", "content": value}]
    if not value:
        raise Reject("empty_text", "`prompt` has no messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise Reject("wrong_type", f"`prompt[{i}]` must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role is None or content is None:
            raise Reject("missing_field", f"`prompt[{i}]` needs `role` and `content`")
        if not isinstance(role, str) or not isinstance(content, str):
            raise Reject("wrong_type", f"`prompt[{i}]` role and content must be strings")
        if role not in schema.ROLES:
            raise Reject("bad_value", f"`prompt[{i}].role` is {role!r}, not one of {schema.ROLES}")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise Reject("bad_value", "`prompt` must end with a user message")
    return out


def _prompt(obj: dict) -> tuple[str | None, list[dict[str, str]] | None]:
    prompt_id = checked_field(obj, "prompt_id", str, required=False)
    raw = checked_field(obj, "prompt", (str, list), required=False)
    if prompt_id is None and raw is None:
        raise Reject("missing_field", "one of `prompt` and `prompt_id` is required")
    return prompt_id, (_messages(raw) if raw is not None else None)


def _day(obj: dict, default: dt.date | None) -> dt.date | None:
    value = checked_field(obj, "day", str, required=False)
    if value is None:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise Reject("bad_value", f"`day` is {value!r}, not a YYYY-MM-DD date") from None


def _pointwise(obj: dict) -> dict:
    rating = checked_field(obj, "rating", int)
    if not 1 <= rating <= 5:
        raise Reject("bad_value", f"`rating` is {rating}, not in 1..5")
    questions = checked_field(obj, "questions", dict)
    flags = {}
    for name in ("false_refusal", "templated"):
        if questions.get(name) is None:
            raise Reject("missing_field", f"`questions.{name}` is required")
        if not isinstance(questions[name], bool):
            raise Reject("wrong_type", f"`questions.{name}` must be a boolean")
        flags[name] = questions[name]
    for name, answer in questions.items():
        if not (answer is None or isinstance(answer, (bool, int, float, str))):
            raise Reject("wrong_type", f"`questions.{name}` must be a boolean, number, string or null")
    return {
        "response": text_field(obj, "response"),
        "rating": rating,
        **flags,
        "answers": json.dumps(questions, sort_keys=True, ensure_ascii=False),
    }


def _pairwise(obj: dict) -> dict:
    a, b = text_field(obj, "response_a"), text_field(obj, "response_b")
    preferred = checked_field(obj, "preferred", str)
    if preferred not in ("a", "b", "tie"):
        raise Reject("bad_value", f"`preferred` is {preferred!r}, not 'a', 'b' or 'tie'")
    strength = checked_field(obj, "strength", int, required=False)
    if strength is not None and strength not in STRENGTHS:
        raise Reject("bad_value", f"`strength` is {strength}, not one of {STRENGTHS}")
    if a == b:
        raise Reject("bad_value", "`response_a` and `response_b` are identical")
    return {"response_a": a, "response_b": b, "preferred": preferred, "strength": strength}


def _rewrite(obj: dict) -> dict:
    return {"original": text_field(obj, "original"), "rewrite": text_field(obj, "rewrite")}


def _steerability(obj: dict) -> dict:
    violated = checked_field(obj, "violated_instructions", list)
    if not all(isinstance(v, str) for v in violated):
        raise Reject("wrong_type", "`violated_instructions` must be a list of instruction ids (strings)")
    return {
        "response": text_field(obj, "response"),
        "character_id": text_field(obj, "character_id"),
        "violated_instructions": violated,
    }


_PARSERS = {"pointwise": _pointwise, "pairwise": _pairwise, "rewrite": _rewrite, "steerability": _steerability}


def read_annotations(
    source: str | Path | Iterable[str], *, source_file: str | None = None, day: dt.date | None = None
) -> AnnotationSet:
    """Read annotation JSONL (a path, `.gz` or not, or an iterable of lines) into an `AnnotationSet`.

    `day` is the default for records without a `day` of their own (and the quarantine's day);
    `source_file` names the input in quarantine rows (the path's name by default).
    """
    source_file = source_label(source, source_file)

    def parse(obj: dict, line_no: int) -> tuple[str, tuple[str, dict]]:
        kind = checked_field(obj, "kind", str)
        if kind not in KINDS:
            raise Reject("unknown_kind", f"`kind` is {kind!r}, not one of {KINDS}")
        prompt_id, prompt = _prompt(obj)
        body = _PARSERS[kind](obj)
        ann_id = checked_field(obj, "id", str, required=False) or digest(obj)[:16]
        row = {
            "annotation_id": ann_id,
            "prompt_id": prompt_id,
            "prompt": prompt,
            **body,
            "annotator": checked_field(obj, "annotator", str, required=False),
            "day": _day(obj, day),
            "source_file": source_file,
            "line": line_no,
        }
        return ann_id, (kind, row)

    parsed, quarantine, read = read_records(
        source, parse, source_file, day, "annotation id {id!r} appeared earlier in the input"
    )
    frames = {k: pl.DataFrame([row for kind, row in parsed if kind == k], schema=FRAMES[k]) for k in KINDS}
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
