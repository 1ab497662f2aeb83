"""The Hugging Face `datasets` source: a messages column from a ``save_to_disk`` folder or (only when the user
allows it) a hub name. Rows with a timestamp column keep their day; rows without one are replayed like the
default corpus.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

from pipeline.seeded_uniform import seeded_uniform
from pipeline.source_config import Record, SourceConfig, SourceConfigError, jsonable, parse_iso, replay_offsets

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


def _ts_column(ds) -> str | None:
    return next((c for c in _TS_COLUMNS if c in ds.column_names), None)


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
                d = ts if isinstance(ts, datetime) else parse_iso(str(ts))
                d = d.replace(tzinfo=UTC) if d.tzinfo is None else d
                by_day.setdefault(d.astimezone(UTC).date(), []).append(i)
            except ValueError:
                by_day.setdefault(cfg.first_day, []).append(i)  # ingest quarantines the bad timestamp
        return by_day, replay_ts
    base = datetime.combine(cfg.first_day, datetime.min.time()).replace(tzinfo=UTC)
    # without timestamps, each row gets a stable pseudo-random start time, and rows are spread evenly over the days
    starts = {i: base + timedelta(seconds=int(seeded_uniform(f"{path}:{i}") * 86000)) for i in range(len(ds))}
    for key, (day, shift) in replay_offsets([(f"{i:012d}", t) for i, t in starts.items()], cfg).items():
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
    ts_col = _ts_column(ds)
    by_day, replay_ts = _hf_plan(cfg.path, cfg.split, cfg.allow_hub, cfg.end_date, cfg.replay_days, ts_col)
    rows = by_day.get(day, [])
    if not rows:
        return
    label = Path(cfg.path).name if Path(cfg.path).exists() else cfg.path
    for i in rows:
        value = {k: jsonable(v) for k, v in ds[i].items() if v is not None}
        if cfg.messages_column != "messages":
            value["messages"] = value.pop(cfg.messages_column, None)
        value.setdefault("conversation_id", f"{label}:{i}")
        if ts_col is None:
            value["ts"] = replay_ts[i].isoformat()
        elif ts_col != "ts":
            value["ts"] = value.pop(ts_col, None)
        value.setdefault("served_by", cfg.served_by)
        yield Record(source_file=str(label), line=i, raw="", value=value)


def hf_days(cfg: SourceConfig) -> list[date]:
    """The days the dataset's rows fall on (their own timestamps, or the replay days)."""
    ds = _load_hf(cfg.path, cfg.split, cfg.allow_hub)  # type: ignore[arg-type]
    return sorted(_hf_plan(cfg.path, cfg.split, cfg.allow_hub, cfg.end_date, cfg.replay_days, _ts_column(ds))[0])
