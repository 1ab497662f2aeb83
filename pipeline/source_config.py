"""The traffic source's settings, the record a source yields, and the replay schedule the replayed kinds share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

SOURCE_KINDS = ("chitchat", "folder", "hf_dataset")
_MAX_PARSE_DEPTH = 500  # json's decoder recurses per level; far below the interpreter's recursion limit
_MAX_INT_DIGITS = 4300  # Python's default int <-> str conversion limit


class SourceConfigError(ValueError):
    """A setting of the traffic source is wrong; the message names the setting and the fix."""


@dataclass
class SourceConfig:
    kind: str = field(default="chitchat", metadata={"help": f"one of {SOURCE_KINDS}"})
    path: str | None = field(
        default=None,
        metadata={
            "help": "folder of day files (folder), or save_to_disk folder / hub name (hf_dataset); "
            "for chitchat, an optional path to its dataset.json (default: the installed package's)"
        },
    )
    end_date: str = field(default="2026-01-14", metadata={"help": "replay: last day of replayed traffic (YYYY-MM-DD)"})
    replay_days: int = field(default=14, metadata={"help": "replay: number of days the corpus is spread over"})
    internal_user_fraction: float = field(
        default=0.1,
        metadata={"help": "replay: share of users (by salted hash) whose traffic counts as `internal` (staff testers)"},
    )
    served_by: str = field(default="gen-0", metadata={"help": "model version recorded on replayed assistant turns"})
    surface: str = field(default="chat", metadata={"help": "surface recorded when a record names none"})
    messages_column: str = field(default="messages", metadata={"help": "hf_dataset: the column holding the chat"})
    split: str = field(default="train", metadata={"help": "hf_dataset: split to read from a DatasetDict or hub name"})
    allow_hub: bool = field(default=False, metadata={"help": "hf_dataset: allow loading a hub name (needs network)"})
    max_line_bytes: int = field(
        default=8 << 20,
        metadata={"help": "folder: a longer line (decompressed bytes) is quarantined unparsed (line_too_long)"},
    )
    max_file_bytes: int = field(
        default=16 << 30,
        metadata={
            "help": "folder: a file is read up to this many decompressed bytes, the rest is not (file_too_large)"
        },
    )
    max_day_bytes: int = field(
        default=64 << 30,
        metadata={"help": "folder: a day's files are read up to this many decompressed bytes in all (day_too_large)"},
    )
    max_json_depth: int = field(
        default=64,
        metadata={
            "help": "folder: a line nested deeper (objects and lists) is quarantined unparsed (nesting_too_deep)"
        },
    )
    max_int_digits: int = field(
        default=64, metadata={"help": "folder: a line holding a longer integer is quarantined (int_too_long)"}
    )

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise SourceConfigError(
                f"source kind {self.kind!r} is unknown: set `kind` (env FLYWHEEL_SOURCE_KIND) to one of {SOURCE_KINDS}"
            )
        try:
            self.end = date.fromisoformat(self.end_date)
        except (TypeError, ValueError):
            raise SourceConfigError(
                f"source `end_date` {self.end_date!r} is not a date: use YYYY-MM-DD, e.g. 2026-01-14"
            ) from None
        if self.replay_days < 1:
            raise SourceConfigError(f"source `replay_days` must be >= 1, got {self.replay_days}")
        if not 0.0 <= self.internal_user_fraction <= 1.0:
            raise SourceConfigError(
                f"source `internal_user_fraction` must be within [0, 1], got {self.internal_user_fraction}"
            )
        if self.kind == "folder":
            if not self.path:
                raise SourceConfigError(
                    "source kind 'folder' needs `path` (env FLYWHEEL_SOURCE_PATH): the folder of day files"
                )
            if not Path(self.path).is_dir():
                raise SourceConfigError(
                    f"source `path` {self.path!r} is not a folder: point it at the folder holding "
                    "YYYY-MM-DD.jsonl / .parquet files or day=YYYY-MM-DD/ folders"
                )
        if self.kind == "hf_dataset":
            if not self.path:
                raise SourceConfigError("source kind 'hf_dataset' needs `path`: a save_to_disk folder or a hub name")
            if not Path(self.path).exists() and not self.allow_hub:
                raise SourceConfigError(
                    f"source `path` {self.path!r} is not a folder on disk; to load it from the hub set `allow_hub` "
                    "(needs network), or save the dataset with `save_to_disk` and point `path` at that folder"
                )
        if self.kind == "chitchat" and self.path and not Path(self.path).is_file():
            raise SourceConfigError(
                f"source `path` {self.path!r} is not a file: leave it empty to use the installed package"
            )
        self._check_limits()

    def _check_limits(self) -> None:
        for name in ("max_line_bytes", "max_file_bytes", "max_day_bytes", "max_json_depth", "max_int_digits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SourceConfigError(f"source `{name}` must be a whole number >= 1, got {value!r}")
        if self.max_json_depth > _MAX_PARSE_DEPTH:
            raise SourceConfigError(
                f"source `max_json_depth` {self.max_json_depth} is above {_MAX_PARSE_DEPTH}: deeper documents "
                f"cannot be parsed safely; set it to {_MAX_PARSE_DEPTH} or less"
            )
        if self.max_int_digits > _MAX_INT_DIGITS:
            raise SourceConfigError(
                f"source `max_int_digits` {self.max_int_digits} is above Python's own limit of {_MAX_INT_DIGITS}; "
                f"set it to {_MAX_INT_DIGITS} or less"
            )
        if self.max_line_bytes > self.max_file_bytes or self.max_file_bytes > self.max_day_bytes:
            raise SourceConfigError(
                "source byte limits must nest: `max_line_bytes` <= `max_file_bytes` <= `max_day_bytes`, got "
                f"{self.max_line_bytes} / {self.max_file_bytes} / {self.max_day_bytes}"
            )

    @property
    def first_day(self) -> date:
        return self.end - timedelta(days=self.replay_days - 1)

    def replay_days_list(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range(self.replay_days)]


@dataclass(slots=True)
class Record:
    """One input record: a canonical message or a whole conversation, or an unparseable line."""

    source_file: str
    line: int
    raw: str
    value: Any = None
    error: tuple[str, str] | None = None  # (reason_code, detail) when it could not even be parsed


# ---- the replay schedule and values the replayed kinds share


def replay_offsets(starts: list[tuple[str, datetime]], cfg: SourceConfig) -> dict[str, tuple[date, timedelta]]:
    """Spread items evenly over the replay days in start order; shift each to its day, same time of day."""
    order = sorted(starts, key=lambda kv: (kv[1], kv[0]))
    n = len(order)
    days = cfg.replay_days_list()
    out: dict[str, tuple[date, timedelta]] = {}
    for i, (key, start) in enumerate(order):
        day = days[min(i * len(days) // max(n, 1), len(days) - 1)]
        target = datetime.combine(day, start.timetz()).replace(tzinfo=UTC)
        out[key] = (day, target - start)
    return out


def parse_iso(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    return v
