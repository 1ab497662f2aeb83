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
  name the day are refused with a reason. A file is read by what it holds, not by its name (gzip, Parquet,
  UTF-8/16/32 text, JSON lines or one JSON array: `pipeline.file_sniff`). Lines and files are read in bounded
  chunks under byte limits counted decompressed, and a line is checked for nesting depth and integer length
  before it is parsed.
- ``hf_dataset``: a Hugging Face `datasets` dataset with a messages column, from a ``save_to_disk``
  folder or (only when the machine is online and the user asks for it) a hub name. Rows with a
  timestamp column keep their day; rows without one are replayed like the default corpus.

A source yields `Record`s: the raw payload of one input record and where it came from. Parsing
failures are records too (with an error), so the ingest step can quarantine them with their location;
so are files refused or not read to their end (at line 0, with a file-level reason code). Each kind has its
module (`source_chitchat`, `source_folder`, `source_hf`); the settings and the record are `source_config`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

from pipeline.folder_scan import folder_days
from pipeline.source_chitchat import read_chitchat
from pipeline.source_config import Record, SourceConfig
from pipeline.source_folder import read_folder
from pipeline.source_hf import hf_days, read_hf_dataset


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
        return hf_days(cfg)
    return cfg.replay_days_list()
