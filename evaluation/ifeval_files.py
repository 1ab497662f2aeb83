"""IFEval's input files: the prompts with their instructions, and a model's responses (JSONL, optionally
gzipped). A line that cannot be read is dropped with a reason code, never raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import polars as pl

from pipeline import schema
from pipeline.maybe_gzip import open_maybe_gzip

STAGE = "ifeval"

INPUT_SCHEMA = pl.Schema(
    {"key": pl.Int64, "prompt": pl.Utf8, "instruction_id_list": pl.List(pl.Utf8), "kwargs": pl.Utf8}
)
RESPONSE_SCHEMA = pl.Schema({"prompt": pl.Utf8, "response": pl.Utf8})


_drop = partial(schema.drop_row, STAGE)


def _read_lines(path: str | Path, row_of: Callable[[dict], dict], reason: str) -> tuple[list[dict], pl.DataFrame]:
    """The rows `row_of` makes of the JSON lines of `path`, in file order; a line it cannot read is dropped
    with `reason`."""
    rows, drops = [], []
    with open_maybe_gzip(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(row_of(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                drops.append(_drop(f"line:{line_no}", reason, f"{type(exc).__name__}: {exc}"[:300]))
    return rows, schema.drops_frame(drops)


def _input_row(obj: dict) -> dict:
    ids = [str(i) for i in obj["instruction_id_list"]]
    kwargs = obj.get("kwargs") or [{} for _ in ids]
    if len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise ValueError("kwargs must be one dict per instruction id")
    return {
        "key": int(obj["key"]),
        "prompt": str(obj["prompt"]),
        "instruction_id_list": ids,
        "kwargs": json.dumps(kwargs),
    }


def _response_row(obj: dict) -> dict:
    response = obj["response"]
    if not isinstance(response, str):
        raise TypeError("response is not a string")
    return {"prompt": str(obj["prompt"]), "response": response}


def read_inputs(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """IFEval prompts (`{"key","prompt","instruction_id_list","kwargs"}` JSONL, optionally gzipped) as a
    frame with `kwargs` kept as a JSON list (its dicts differ per instruction); bad lines are dropped."""
    rows, drops = _read_lines(path, _input_row, "bad_input_record")
    return pl.DataFrame(rows, schema=INPUT_SCHEMA), drops


def read_responses(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Responses (`{"prompt","response"}` JSONL, optionally gzipped), in file order."""
    rows, drops = _read_lines(path, _response_row, "bad_response_record")
    return pl.DataFrame(rows, schema=RESPONSE_SCHEMA), drops
