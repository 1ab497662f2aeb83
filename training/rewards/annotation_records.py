"""The one read loop of the annotation formats: JSON objects line by line (a `.gz` file read transparently),
each checked by its format's parser, and every record that breaks a rule quarantined with a reason code
(`schema.QUARANTINE`) rather than raised.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from pipeline import schema
from pipeline.maybe_gzip import open_maybe_gzip


class Reject(ValueError):
    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def source_lines(source: str | Path | Iterable[str]) -> Iterator[str]:
    if isinstance(source, (str, Path)):
        with open_maybe_gzip(source) as fh:
            yield from fh
    else:
        yield from source


def checked_field(obj: dict, name: str, types: type | tuple[type, ...], *, required: bool = True) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise Reject("missing_field", f"`{name}` is required")
        return None
    value = obj[name]
    # bool is an int in Python; a JSON true is never a valid number here
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise Reject("wrong_type", f"`{name}` must be {_type_names(types)}, got a boolean")
    if not isinstance(value, types):
        raise Reject("wrong_type", f"`{name}` must be {_type_names(types)}, got {type(value).__name__}")
    return value


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object"}
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in types)


def text_field(obj: dict, name: str) -> str:
    value = checked_field(obj, name, str)
    if not value.strip():
        raise Reject("empty_text", f"`{name}` is empty")
    return value


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
        raise Reject("invalid_json", str(err)) from None
    if not isinstance(obj, dict):
        raise Reject("not_object", f"a record must be a JSON object, got {type(obj).__name__}")
    return obj


def source_label(source: str | Path | Iterable[str], source_file: str | None) -> str:
    if source_file is not None:
        return source_file
    return Path(source).name if isinstance(source, (str, Path)) else "<lines>"


def read_records(
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
    for line_no, raw in enumerate(source_lines(source), start=1):
        if not raw.strip():
            continue
        read += 1
        try:
            record_id, value = parse(_load_object(raw), line_no)
            if record_id in seen:
                raise Reject("duplicate_id", duplicate.format(id=record_id))
            seen.add(record_id)
            kept.append(value)
        except Reject as rej:
            bad.append(_quarantine_row(day, source_file, line_no, rej.code, rej.detail, raw))
    return kept, pl.DataFrame(bad, schema=schema.QUARANTINE), read
