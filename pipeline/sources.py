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
- ``hf_dataset``: a Hugging Face `datasets` dataset with a messages column, from a ``save_to_disk``
  folder or (only when the machine is online and the user asks for it) a hub name. Rows with a
  timestamp column keep their day; rows without one are replayed like the default corpus.

A source yields `Record`s: the raw payload of one input record and where it came from. Parsing
failures are records too (with an error), so the ingest step can quarantine them with their location.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.maybe_gzip import open_maybe_gzip
from pipeline.seeded_uniform import seeded_uniform

SOURCE_KINDS = ("chitchat", "folder", "hf_dataset")
_DATE_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


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


def day_files(folder: Path, day: date) -> list[Path]:
    """Files holding `day`: ``day=YYYY-MM-DD/*`` or any file whose name carries the date."""
    iso = day.isoformat()
    found = [p for p in (folder / f"day={iso}").glob("*") if p.is_file()]
    for p in folder.iterdir():
        if p.is_file():
            m = _DATE_IN_NAME.search(p.name)
            if m and m.group(1) == iso:
                found.append(p)
    return sorted(p for p in found if p.name.endswith(_SUFFIXES) and not p.name.startswith("."))


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


def _read_jsonl(path: Path, label: str) -> Iterator[Record]:
    with open_maybe_gzip(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue  # blank lines are layout, not records
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                shown = raw.decode("utf-8", errors="backslashreplace")
                yield Record(label, lineno, shown, error=("invalid_utf8", f"byte {e.start}: {e.reason}"))
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                yield Record(label, lineno, text, error=("invalid_json", f"{e.msg} at column {e.colno}"))
                continue
            yield Record(label, lineno, text, value=value)


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


def _read_parquet(path: Path, label: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for value in batch.to_pylist():
            row += 1
            # drop nulls so that an absent optional field reads the same as in JSONL
            value = {k: _jsonable(v) for k, v in value.items() if v is not None}
            yield Record(label, row, "", value=value)


def read_folder(cfg: SourceConfig, day: date) -> Iterator[Record]:
    folder = Path(cfg.path)  # type: ignore[arg-type]
    for path in day_files(folder, day):
        label = path.relative_to(folder).as_posix()
        if path.name.endswith(".parquet"):
            yield from _read_parquet(path, label)
        else:
            yield from _read_jsonl(path, label)


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
