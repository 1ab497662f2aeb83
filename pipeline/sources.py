"""Where a day of traffic comes from.

Three kinds, chosen by `SourceConfig.kind`:

- ``chitchat`` (default): the BYU Chit-Chat corpus shipped by the `chitchat-dataset` package, real
  human-human chat replayed as daily traffic. Conversations are ordered by their first timestamp and
  spread evenly over the `replay_days` days ending at `end_date`; each conversation's timestamps are
  shifted by one offset so it starts on its day at its original time of day. The first sender of a
  conversation is the user, the other speaker plays the character.
- ``folder``: JSONL or Parquet files, one file per day (the day's date in the file name, e.g.
  ``2026-01-03.jsonl`` or ``traffic-2026-01-03.parquet``) or ``day=YYYY-MM-DD/`` folders. A record is
  either one canonical message (``conversation_id, role, text, ts, ...``) or one conversation in the
  common ``{"messages": [{"role", "content"}, ...]}`` format with optional metadata fields.
  Only regular files inside the folder are read (never through a symbolic link); other entries that
  name the day are refused with a reason. Lines and files are read in bounded chunks under byte limits
  counted decompressed, and a line is checked for nesting depth and integer length before it is parsed.
- ``hf_dataset``: a Hugging Face `datasets` dataset with a messages column, from a ``save_to_disk``
  folder or (only when the machine is online and the user asks for it) a hub name. Rows with a
  timestamp column keep their day; rows without one are replayed like the default corpus.

A source yields `Record`s: the raw payload of one input record and where it came from. Parsing
failures are records too (with an error), so the ingest step can quarantine them with their location;
so are files refused or not read to their end (at line 0, with a file-level reason code).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline.maybe_gzip import open_maybe_gzip
from pipeline.seeded_uniform import seeded_uniform

SOURCE_KINDS = ("chitchat", "folder", "hf_dataset")
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
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


# ---- shared helpers ---------------------------------------------------------------------------


def _replay_offsets(starts: list[tuple[str, datetime]], cfg: SourceConfig) -> dict[str, tuple[date, timedelta]]:
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


def _parse_iso(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# ---- chitchat ---------------------------------------------------------------------------------


def chitchat_path(cfg: SourceConfig) -> Path:
    if cfg.path:
        return Path(cfg.path)
    import chitchat_dataset  # the package ships the corpus as dataset.json beside its module

    return Path(chitchat_dataset.__file__).with_name("dataset.json")


@lru_cache(maxsize=2)
def _load_json_corpus(path: str) -> dict:
    with open_maybe_gzip(path) as f:
        return json.load(f)


@lru_cache(maxsize=4)
def _chitchat_plan(path: str, end_date: str, replay_days: int) -> tuple[dict[date, list[tuple[int, str]]], dict]:
    """Day -> [(ordinal, conv_id)], and conv_id -> time offset, for one replay setting."""
    corpus = _load_json_corpus(path)
    cfg = SourceConfig(end_date=end_date, replay_days=replay_days)
    starts = []
    for cid, conv in corpus.items():
        first = _first_timestamp(conv)
        if first is not None:
            starts.append((cid, first))
    offsets = _replay_offsets(starts, cfg)
    by_day: dict[date, list[tuple[int, str]]] = {}
    fallback_day = cfg.first_day
    for ordinal, cid in enumerate(corpus):
        # a conversation without any readable timestamp still gets a day, so ingest can quarantine it
        day = offsets[cid][0] if cid in offsets else fallback_day
        by_day.setdefault(day, []).append((ordinal, cid))
    return by_day, offsets


def _first_timestamp(conv: dict) -> datetime | None:
    for turn in conv.get("messages") or []:
        for m in turn or []:
            try:
                return _parse_iso(m["timestamp"])
            except (KeyError, TypeError, ValueError):
                continue
    return None


def read_chitchat(cfg: SourceConfig, day: date) -> Iterator[Record]:
    path = chitchat_path(cfg)
    corpus = _load_json_corpus(str(path))
    by_day, offsets = _chitchat_plan(str(path), cfg.end_date, cfg.replay_days)
    for ordinal, cid in by_day.get(day, []):
        conv = corpus[cid]
        shift = offsets[cid][1] if cid in offsets else timedelta(0)
        msgs = [m for turn in conv.get("messages") or [] for m in (turn or [])]
        user_sender = msgs[0].get("sender") if msgs and isinstance(msgs[0], dict) else None
        messages = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                messages.append(m)  # left as is: ingest quarantines it as wrong_type
                continue
            ts = m.get("timestamp")
            try:
                ts = (_parse_iso(ts) + shift).isoformat()
            except (TypeError, ValueError):
                pass  # keep the bad value for ingest to quarantine
            messages.append(
                {
                    "id": f"{cid}:{i}",
                    "role": "user" if m.get("sender") == user_sender else "assistant",
                    "content": m.get("text"),
                    "ts": ts,
                }
            )
        prompt = conv.get("prompt") or ""
        record = {
            "conversation_id": cid,
            "user_id": str(user_sender),
            # the corpus has 36 opening prompts; each plays the part of one character card
            "character_id": "cc-" + hashlib.blake2b(prompt.encode(), digest_size=4).hexdigest(),
            "served_by": cfg.served_by,
            "surface": cfg.surface,
            "messages": messages,
        }
        yield Record(source_file=f"chitchat_dataset/{path.name}", line=ordinal, raw="", value=record)


# ---- folder -----------------------------------------------------------------------------------
#
# A file-level problem is one record at line 0 (lines count from 1): a file refused before it is read,
# or one that could not be read to its end. What was read before a break stays read.

FILE_REFUSED = {
    "symlink": "a symbolic link: refused, never read",
    "outside_source": "resolves outside the source folder: refused, never read",
    "hidden_file": "a hidden file (name starting with '.'), such as an upload in progress: not read",
    "unsupported_file": "not a file the folder source reads",
    "unreadable_file": "could not be opened or read at all",
    "day_too_large": "the day's byte limit was spent by the files before it: not read",
}
FILE_CUT = {
    "truncated_file": "could not be read to its end; the lines before the break are kept",
    "file_too_large": "longer than `max_file_bytes` decompressed; the lines before the limit are kept",
}
_CHUNK = 1 << 16
_BOM = b"\xef\xbb\xbf"
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]")


@dataclass
class DayScan:
    """The files a day selects: those to read, and those refused with (label, reason code, detail)."""

    files: list[Path]
    refused: list[tuple[str, str, str]]


def _refusal(path: Path, root: Path) -> tuple[str, str] | None:
    """Why `path` is not read, or None for a regular data file inside the source folder. Never opens it."""
    try:
        info = path.lstat()
    except OSError as e:
        return "unreadable_file", f"cannot be looked at: {e.strerror or type(e).__name__}"
    if stat.S_ISLNK(info.st_mode):
        inside = path.resolve().is_relative_to(root)
        code = "symlink" if inside else "outside_source"
        return code, f"a symbolic link {'inside' if inside else 'outside'} the source folder: refused, never read"
    if not path.resolve().is_relative_to(root):
        return "outside_source", FILE_REFUSED["outside_source"]
    if path.name.startswith("."):
        return "hidden_file", FILE_REFUSED["hidden_file"]
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, socket or device)"
        return "unsupported_file", f"{kind}: the folder source reads only files, and day folders named day=YYYY-MM-DD"
    if not path.name.endswith(_SUFFIXES):
        return "unsupported_file", f"the folder source reads {', '.join(_SUFFIXES)} files; this one is not read"
    return None


def scan_day(folder: Path, day: date) -> DayScan:
    """Everything that names `day`: ``day=YYYY-MM-DD/*`` and any entry of `folder` whose name carries the date.

    Only regular files inside `folder` with a readable suffix are to be read; every other entry is refused
    with a reason (a symbolic link, a path resolving outside the folder, a hidden or unsupported file).
    """
    root = folder.resolve()
    iso = day.isoformat()
    day_dir = folder / f"day={iso}"
    candidates: list[Path] = []
    refused: list[tuple[str, str, str]] = []
    if day_dir.is_symlink() or (day_dir.exists() and not day_dir.resolve().is_relative_to(root)):
        code, detail = _refusal(day_dir, root) or ("outside_source", FILE_REFUSED["outside_source"])
        refused.append((day_dir.name, code, detail))
    elif day_dir.is_dir():
        candidates += day_dir.iterdir()
    for p in folder.iterdir():
        m = _DATE_IN_NAME.search(p.name)
        if m and m.group(1) == iso and p.name != day_dir.name:
            candidates.append(p)
    files = []
    for p in sorted(candidates):
        why = _refusal(p, root)
        if why is None:
            files.append(p)
        else:
            refused.append((p.relative_to(folder).as_posix(), *why))
    return DayScan(files, sorted(refused))


def day_files(folder: Path, day: date) -> list[Path]:
    """The regular data files holding `day`: ``day=YYYY-MM-DD/*`` or any file whose name carries the date."""
    return scan_day(folder, day).files


def folder_days(folder: Path) -> list[date]:
    days = set()
    for p in folder.iterdir():
        m = _DATE_IN_NAME.search(p.name)
        if m:
            try:
                days.add(date.fromisoformat(m.group(1)))
            except ValueError:
                continue
    return sorted(days)


class _ByteBudget:
    """The decompressed bytes a day may still read (`max_day_bytes`), spent file by file."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.left = cfg.max_day_bytes

    def for_file(self) -> tuple[int, str]:
        """The bytes the next file may read, and the reason code when it reads more."""
        if self.cfg.max_file_bytes <= self.left:
            return self.cfg.max_file_bytes, "file_too_large"
        return self.left, "day_too_large"


class _LineReader:
    """Splits a byte stream into lines, reading bounded chunks: a line is never held beyond `max_line` + 1
    bytes, and reading stops after `max_bytes` (a gzip bomb's single line is never decompressed whole)."""

    def __init__(self, stream: IO[bytes], max_line: int, max_bytes: int):
        self.stream, self.max_line, self.max_bytes = stream, max_line, max_bytes
        self.bytes_read = 0
        self.over_limit = False
        self.pending = 0  # length of the line being read when reading stopped

    def __iter__(self) -> Iterator[tuple[int, bytes, int]]:
        """(line number, the line's first `max_line` + 1 bytes at most, its whole length) for each line."""
        head = bytearray()
        lineno = 0
        while True:
            room = self.max_bytes - self.bytes_read
            if room <= 0:
                self.over_limit = bool(self.stream.read(1))
                if self.over_limit:
                    return
                break
            chunk = self.stream.read1(min(_CHUNK, room))  # what was decompressed before a break is returned
            if not chunk:
                break
            self.bytes_read += len(chunk)
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                stop = nl if nl >= 0 else len(chunk)
                if len(head) <= self.max_line:
                    head += chunk[start : min(stop, start + self.max_line + 1 - len(head))]
                self.pending += stop - start
                if nl < 0:
                    break
                lineno += 1
                yield lineno, bytes(head), self.pending
                head.clear()
                self.pending = 0
                start = nl + 1
        if self.pending:
            length, self.pending = self.pending, 0
            yield lineno + 1, bytes(head), length


class _IntTooLong(ValueError):
    pass


@lru_cache(maxsize=8)
def _bounded_decoder(max_digits: int) -> json.JSONDecoder:
    """A JSON decoder that refuses integers longer than `max_digits` before converting them."""

    def bounded_int(digits: str) -> int:
        n = len(digits.lstrip("-"))
        if n > max_digits:
            raise _IntTooLong(f"an integer has {n} digits, the limit is {max_digits}")
        return int(digits)

    return json.JSONDecoder(parse_int=bounded_int)


def _json_depth_over(text: str, limit: int) -> bool:
    """Whether objects and lists nest deeper than `limit`, found without recursing (brackets inside strings
    do not count)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).encode("ascii")
    steps = np.frombuffer(brackets, dtype=np.uint8)
    depth = np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1))
    return bool(depth.size) and int(depth.max()) > limit


def _parse_line(label: str, lineno: int, raw: bytes, length: int, cfg: SourceConfig) -> Record | None:
    """One line as a Record (an error Record when it cannot be parsed); None for a blank line."""
    raw = raw.rstrip(b"\r")
    if length > cfg.max_line_bytes:
        shown = raw[: cfg.max_line_bytes].decode("utf-8", errors="replace")
        detail = f"the line has {length} bytes, the limit is {cfg.max_line_bytes} (max_line_bytes); not parsed"
        return Record(label, lineno, shown, error=("line_too_long", detail))
    if not raw.strip():
        return None  # blank lines are layout, not records
    if raw.startswith(_BOM):
        if lineno == 1:
            raw = raw[len(_BOM) :]  # a byte-order mark opening the file is its encoding's signature
        else:
            shown = raw.decode("utf-8", errors="backslashreplace")
            detail = "a byte-order mark opens a line inside the file (files concatenated with their marks?)"
            return Record(label, lineno, shown, error=("stray_bom", detail))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        shown = raw.decode("utf-8", errors="backslashreplace")
        return Record(label, lineno, shown, error=("invalid_utf8", f"byte {e.start}: {e.reason}"))
    if _json_depth_over(text, cfg.max_json_depth):
        detail = f"objects and lists nest deeper than {cfg.max_json_depth} levels (max_json_depth); not parsed"
        return Record(label, lineno, text, error=("nesting_too_deep", detail))

    try:
        value = _bounded_decoder(cfg.max_int_digits).decode(text)
    except _IntTooLong as e:
        return Record(label, lineno, text, error=("int_too_long", f"{e} (max_int_digits)"))
    except json.JSONDecodeError as e:
        return Record(label, lineno, text, error=("invalid_json", f"{e.msg} at column {e.colno}"))
    except RecursionError:
        return Record(label, lineno, text, error=("nesting_too_deep", "nested too deep to parse"))
    except ValueError as e:
        return Record(label, lineno, text, error=("invalid_json", str(e)[:200]))
    return Record(label, lineno, text, value=value)


def _why(e: BaseException) -> str:
    """An error's cause without the path it may carry (machine paths stay out of the lake)."""
    if isinstance(e, OSError) and e.strerror:
        return f"{type(e).__name__}: {e.strerror}"
    return f"{type(e).__name__}: {str(e)[:200]}"


def _file_record(label: str, code: str, detail: str) -> Record:
    return Record(label, 0, "", error=(code, detail))


def _open_failure(label: str, e: OSError) -> Record:
    if e.errno == errno.ELOOP:
        return _file_record(label, "symlink", "became a symbolic link after the day was scanned: refused, never read")
    return _file_record(label, "unreadable_file", f"cannot be opened: {_why(e)}")


def _read_jsonl(path: Path, label: str, cfg: SourceConfig, budget: _ByteBudget) -> Iterator[Record]:
    limit, limit_code = budget.for_file()
    lines = 0
    stack = contextlib.ExitStack()
    try:
        f = stack.enter_context(open_maybe_gzip(path, "rb", follow_symlinks=False))
    except OSError as e:
        yield _open_failure(label, e)
        return
    reader = _LineReader(f, cfg.max_line_bytes, limit)
    with stack:
        try:
            for lineno, raw, length in reader:
                lines = lineno
                rec = _parse_line(label, lineno, raw, length, cfg)
                if rec is not None:
                    yield rec
        except Exception as e:  # any read error: what was read before it stays read
            budget.left -= reader.bytes_read
            if not reader.bytes_read:
                yield _file_record(label, "unreadable_file", f"nothing could be read: {_why(e)}")
                return
            yield _file_record(
                label,
                "truncated_file",
                f"{_why(e)} after {reader.bytes_read} bytes: the {lines} lines before the break are kept, "
                f"the incomplete line after them ({reader.pending} bytes) is dropped",
            )
            return
    budget.left -= reader.bytes_read
    if reader.over_limit:
        setting = "max_file_bytes" if limit_code == "file_too_large" else "max_day_bytes"
        yield _file_record(
            label,
            limit_code,
            f"longer than {limit} bytes decompressed ({setting}): the {lines} lines before the limit are kept, "
            "the rest of the file is not read",
        )


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def _read_parquet(path: Path, label: str, cfg: SourceConfig, budget: _ByteBudget) -> Iterator[Record]:
    import pyarrow.parquet as pq

    limit, limit_code = budget.for_file()
    spent = 0
    row = 0
    stack = contextlib.ExitStack()
    try:
        pf = pq.ParquetFile(stack.enter_context(open_maybe_gzip(path, "rb", follow_symlinks=False)))
    except OSError as e:
        stack.close()
        yield _open_failure(label, e)
        return
    except Exception as e:  # not a Parquet file, or a broken footer
        stack.close()
        yield _file_record(label, "unreadable_file", f"not a readable Parquet file: {_why(e)}")
        return
    with stack:
        try:
            for group in range(pf.num_row_groups):
                # the row group's uncompressed size, known before it is decompressed
                size = pf.metadata.row_group(group).total_byte_size
                if spent + size > limit:
                    budget.left -= spent
                    setting = "max_file_bytes" if limit_code == "file_too_large" else "max_day_bytes"
                    yield _file_record(
                        label,
                        limit_code,
                        f"longer than {limit} bytes decompressed ({setting}): the {row} rows of the row groups "
                        "before the limit are kept, the rest of the file is not read",
                    )
                    return
                spent += size
                for batch in pf.iter_batches(batch_size=4096, row_groups=[group]):
                    for value in batch.to_pylist():
                        row += 1
                        # drop nulls so that an absent optional field reads the same as in JSONL
                        value = {k: _jsonable(v) for k, v in value.items() if v is not None}
                        yield Record(label, row, "", value=value)
        except Exception as e:  # a corrupt page: the rows before it stay read
            budget.left -= spent
            code = "truncated_file" if row else "unreadable_file"
            yield _file_record(label, code, f"{_why(e)} after {row} rows: the rows before the break are kept")
            return
    budget.left -= spent


def read_folder(cfg: SourceConfig, day: date) -> Iterator[Record]:
    folder = Path(cfg.path)  # type: ignore[arg-type]
    scan = scan_day(folder, day)
    for label, code, detail in scan.refused:
        yield _file_record(label, code, detail)
    budget = _ByteBudget(cfg)
    for path in scan.files:
        label = path.relative_to(folder).as_posix()
        if budget.left <= 0:
            yield _file_record(label, "day_too_large", FILE_REFUSED["day_too_large"] + " (max_day_bytes)")
        elif path.name.endswith(".parquet"):
            yield from _read_parquet(path, label, cfg, budget)
        else:
            yield from _read_jsonl(path, label, cfg, budget)


# ---- Hugging Face datasets --------------------------------------------------------------------


_TS_COLUMNS = ("ts", "timestamp", "created_at")


@lru_cache(maxsize=2)
def _load_hf(path: str, split: str, allow_hub: bool):
    import datasets

    if Path(path).exists():
        ds = datasets.load_from_disk(path)
    else:
        if not allow_hub:  # guarded in config too; repeated so no code path reaches the network silently
            raise SourceConfigError(f"{path!r} is not on disk and `allow_hub` is off")
        ds = datasets.load_dataset(path, split=split)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise SourceConfigError(f"source `split` {split!r} is not in the dataset: it has {list(ds)}")
        ds = ds[split]
    return ds


@lru_cache(maxsize=4)
def _hf_plan(path: str, split: str, allow_hub: bool, end_date: str, replay_days: int, ts_col: str | None):
    """Day -> row indices; and, for rows without timestamps, the replayed timestamp of each row."""
    ds = _load_hf(path, split, allow_hub)
    cfg = SourceConfig(end_date=end_date, replay_days=replay_days)
    by_day: dict[date, list[int]] = {}
    replay_ts: dict[int, datetime] = {}
    if ts_col is not None:
        for i, ts in enumerate(ds[ts_col]):
            try:
                d = ts if isinstance(ts, datetime) else _parse_iso(str(ts))
                d = d.replace(tzinfo=UTC) if d.tzinfo is None else d
                by_day.setdefault(d.astimezone(UTC).date(), []).append(i)
            except ValueError:
                by_day.setdefault(cfg.first_day, []).append(i)  # ingest quarantines the bad timestamp
        return by_day, replay_ts
    base = datetime.combine(cfg.first_day, datetime.min.time()).replace(tzinfo=UTC)
    # without timestamps, each row gets a stable pseudo-random start time, and rows are spread evenly over the days
    starts = {i: base + timedelta(seconds=int(seeded_uniform(f"{path}:{i}") * 86000)) for i in range(len(ds))}
    for key, (day, shift) in _replay_offsets([(f"{i:012d}", t) for i, t in starts.items()], cfg).items():
        i = int(key)
        by_day.setdefault(day, []).append(i)
        replay_ts[i] = starts[i] + shift
    for rows in by_day.values():
        rows.sort()
    return by_day, replay_ts


def read_hf_dataset(cfg: SourceConfig, day: date) -> Iterator[Record]:
    ds = _load_hf(cfg.path, cfg.split, cfg.allow_hub)  # type: ignore[arg-type]
    if cfg.messages_column not in ds.column_names:
        raise SourceConfigError(
            f"source `messages_column` {cfg.messages_column!r} is not a column of the dataset: it has {ds.column_names}"
        )
    ts_col = next((c for c in _TS_COLUMNS if c in ds.column_names), None)
    by_day, replay_ts = _hf_plan(cfg.path, cfg.split, cfg.allow_hub, cfg.end_date, cfg.replay_days, ts_col)
    rows = by_day.get(day, [])
    if not rows:
        return
    label = Path(cfg.path).name if Path(cfg.path).exists() else cfg.path
    for i in rows:
        value = {k: _jsonable(v) for k, v in ds[i].items() if v is not None}
        if cfg.messages_column != "messages":
            value["messages"] = value.pop(cfg.messages_column, None)
        value.setdefault("conversation_id", f"{label}:{i}")
        if ts_col is None:
            value["ts"] = replay_ts[i].isoformat()
        elif ts_col != "ts":
            value["ts"] = value.pop(ts_col, None)
        value.setdefault("served_by", cfg.served_by)
        yield Record(source_file=str(label), line=i, raw="", value=value)


# ---- entry point ------------------------------------------------------------------------------


def read_day(cfg: SourceConfig, day: date) -> Iterator[Record]:
    """Every input record of `day` from the configured source."""
    if cfg.kind == "chitchat":
        return read_chitchat(cfg, day)
    if cfg.kind == "folder":
        return read_folder(cfg, day)
    return read_hf_dataset(cfg, day)


def available_days(cfg: SourceConfig) -> list[date]:
    """The days the source holds traffic for (replay days, or the dates of the folder's files)."""
    if cfg.kind == "folder":
        return folder_days(Path(cfg.path))  # type: ignore[arg-type]
    if cfg.kind == "hf_dataset":
        ds = _load_hf(cfg.path, cfg.split, cfg.allow_hub)  # type: ignore[arg-type]
        ts_col = next((c for c in _TS_COLUMNS if c in ds.column_names), None)
        return sorted(_hf_plan(cfg.path, cfg.split, cfg.allow_hub, cfg.end_date, cfg.replay_days, ts_col)[0])
    return cfg.replay_days_list()
