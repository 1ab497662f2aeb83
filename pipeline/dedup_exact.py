"""Exact duplicate removal over a frame of texts (the `prompts` table: `text`, `prompt_id`).

Each row is keyed by `text_hash` (`normalized_text_hashes`: blake2b-128 of the normalized text, 32 hex chars;
stable across processes and library versions). Within the frame the first row in (day, id) order is kept; a
row whose hash was kept on an earlier day is dropped with kept_id `seen:<hash>`. Across days, a day's hashes are
looked up by binary search in the earlier days' sorted hash files (`pipeline.keyfile`), so a lookup costs
~log(stored keys) per key and never holds the history in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import keyfile
from pipeline.dedup import check_columns, day_series, dedup_drops, help_text, one_day
from pipeline.history import Compaction, DayChain, Run, days_covered
from pipeline.step import StepCounters, StepResult
from pipeline.text_hash import NORMALIZATION_VERSION, normalized_text_hashes, raw_text_hashes

STAGE_EXACT = "exact_dedup"
EXACT_DUPLICATE = "exact_duplicate"
SEEN_PREFIX = "seen:"


# --- exact -----------------------------------------------------------------------------------------


@dataclass
class ExactDedupConfig:
    normalize: bool = field(
        default=True,
        metadata=help_text(
            "Hash the normalized text (case, punctuation, whitespace, Unicode forms ignored). "
            "False hashes the raw text: only byte-identical rows are duplicates."
        ),
    )

    def history_kind(self) -> str:
        """What a stored hash depends on: runs hashed another way cannot be compared."""
        return f"exact|blake2b128|{NORMALIZATION_VERSION if self.normalize else 'raw'}"


@dataclass(frozen=True)
class ExactCounters(StepCounters):
    exact_within: int
    exact_cross_day: int
    history_days: int  # earlier days the day was checked against

    @property
    def dup_rate(self) -> float:
        return (self.exact_within + self.exact_cross_day) / self.rows_in if self.rows_in else 0.0


def _hash_columns(hashes: Sequence[str], days: Sequence[date] | None = None) -> np.ndarray:
    """Hex hashes as a key file's columns: the two 64-bit halves, and the day (days since 1970) if given."""
    words = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=">u8").reshape(-1, 2).T
    if days is None:
        return words.astype(np.uint64)
    ordinals = pl.Series(list(days), dtype=pl.Date).cast(pl.Int32).to_numpy().astype(np.uint64)
    return np.vstack([words.astype(np.uint64), ordinals])


def _run_hashes(run: Run) -> np.ndarray:
    """A run's hash key file, memory-mapped; for a run of an earlier release (no key file), built from
    its entries."""
    if "hashes" in run.sidecars:
        return keyfile.load(run.sidecars["hashes"])
    entries = pl.read_parquet(run.path, columns=["text_hash", "day"])
    return _hash_columns(entries["text_hash"].to_list(), entries["day"].to_list())


def _merge_hashes(pieces: list[Run], offsets: list[int], stem: Path) -> dict[str, Path]:
    path = stem.with_name(stem.name + ".hashes")
    keyfile.save(path, np.hstack([np.asarray(_run_hashes(p)) for p in pieces]))
    return {"hashes": path}


EXACT_COMPACTION = Compaction(merge_sidecars=_merge_hashes)


def seen_before(hashes: Sequence[str], history: DayChain, day: date) -> pl.DataFrame:
    """(text_hash, day) of the given hashes kept on a day before `day`: each run's sorted hash file is
    binary-searched for the day's distinct hashes, so the history is never read whole nor held."""
    runs = history.runs(day, compaction=EXACT_COMPACTION)
    if not runs or not len(hashes):
        return pl.DataFrame(schema={"text_hash": pl.Utf8, "day": pl.Date})
    distinct = list(set(hashes))
    probe_words = _hash_columns(distinct)
    order = np.argsort(probe_words[0], kind="stable")  # sorted once for the lookups in every run
    distinct = [distinct[i] for i in order]
    probe_words = probe_words[:, order]
    found, found_days = [], []
    for run in runs:
        probe, stored = keyfile.match(_run_hashes(run), probe_words[0])
        same = stored[1] == probe_words[1][probe]
        found.append(probe[same])
        found_days.append(stored[2][same])
    at = np.concatenate(found)
    return (
        pl.DataFrame(
            {
                "text_hash": pl.Series([distinct[i] for i in at], dtype=pl.Utf8),
                "day": pl.Series(np.concatenate(found_days).astype(np.int32)).cast(pl.Date),
            }
        )
        .group_by("text_hash")
        .agg(pl.col("day").min())
    )


def exact_dedup(
    df: pl.DataFrame,
    config: ExactDedupConfig | None = None,
    history: DayChain | None = None,
    text_col: str = "text",
    id_col: str = "prompt_id",
    day_col: str | None = "day",
    day: date | None = None,
) -> StepResult[ExactCounters]:
    """Drop rows whose (normalized) text was already kept: earlier in (day, id) order, or on an earlier day.

    With `history` the frame holds one day: it is checked against the hashes the earlier days kept,
    and the hashes it keeps (`text_hash`, id, day) are committed as its run. Kept rows gain `text_hash`.
    """
    config = config or ExactDedupConfig()
    check_columns(df, "exact_dedup", text_col=text_col, id_col=id_col)
    days = day_series(df, day_col)
    texts = df.get_column(text_col).cast(pl.Utf8).to_list()
    hashes = normalized_text_hashes(texts) if config.normalize else raw_text_hashes(texts)
    ids = df.get_column(id_col).cast(pl.Utf8)
    day = one_day(days, "exact_dedup", day) if history is not None else None
    seen = seen_before(hashes, history, day) if history is not None and day is not None else None
    seen_day = dict(seen.iter_rows()) if seen is not None else {}

    work = pl.DataFrame({"_i": np.arange(df.height), "_h": hashes, "_id": ids, "_day": days})
    order = work.sort(["_day", "_id", "_i"], nulls_last=True)
    first_of = order.group_by("_h", maintain_order=True).agg(
        _kept_id=pl.col("_id").first(), _kept_i=pl.col("_i").first()
    )
    work = work.join(first_of, on="_h", how="left").sort("_i")
    work = work.with_columns(_cross=pl.col("_h").is_in(list(seen_day)))
    work = work.with_columns(_within=(pl.col("_i") != pl.col("_kept_i")) & ~pl.col("_cross"))
    dw = work.filter(pl.col("_cross") | pl.col("_within")).with_columns(
        _kid=pl.when("_cross").then(pl.lit(SEEN_PREFIX) + pl.col("_h")).otherwise("_kept_id"),
        _detail=pl.when("_cross")
        .then(
            pl.lit("same normalized text kept on ") + pl.col("_h").replace_strict(seen_day, default=None).cast(pl.Utf8)
        )
        .otherwise(pl.lit("same normalized text as the kept row")),
    )
    drops = dedup_drops(
        dw.get_column("_day"),
        dw.get_column("_id").to_list(),
        EXACT_DUPLICATE,
        STAGE_EXACT,
        dw.get_column("_kid").to_list(),
        dw.get_column("_detail").to_list(),
    )
    cross, within = work.get_column("_cross"), work.get_column("_within")
    keep_mask = ~(cross | within)
    kept = df.with_columns(pl.Series("text_hash", hashes, dtype=pl.Utf8)).filter(keep_mask)
    if history is not None and day is not None:
        run = pl.DataFrame(
            {"text_hash": kept["text_hash"], id_col: ids.filter(keep_mask), "day": days.filter(keep_mask)}
        )
        history.commit(
            day,
            run.sort("text_hash"),
            sidecars={"hashes": lambda path: keyfile.save(path, _hash_columns(run["text_hash"], run["day"]))},
            compaction=EXACT_COMPACTION,
        )
    counters = ExactCounters(
        rows_in=df.height,
        rows_kept=kept.height,
        exact_within=int(within.sum()),
        exact_cross_day=int(cross.sum()),
        history_days=days_covered(history.runs(day, compaction=EXACT_COMPACTION))
        if history is not None and day is not None
        else 0,
    )
    return StepResult(kept=kept, drops=drops, counters=counters)
