"""Exact and near-duplicate removal over a frame of texts (the `prompts` table: `text`, `prompt_id`).

Normalization (`normalize_text`), applied before hashing and shingling, in this order:
Unicode NFKC (fullwidth letters, ligatures and compatibility forms fold to plain ones), casefold,
NFKC again (casefold can leave unnormalized sequences, and normalizing twice must be a no-op),
apostrophes removed ("don't" == "dont"), every other punctuation character (Unicode category P*)
replaced by a space, whitespace runs collapsed to one space, ends stripped. Symbols and emoji stay:
they carry meaning in chat. A null text normalizes like an empty one.

Exact dedup keys each row by `text_hash` (blake2b-128 of the normalized text, 32 hex chars; stable
across processes and library versions). Within the frame the first row in (day, id) order is kept;
a row whose hash was kept on an earlier day (`seen`) is dropped with kept_id `seen:<hash>`.

Near dedup: MinHash signatures (`pipeline.minhash`; `rensa` by default, or `datasketch`) of shingles
of the normalized text: character 4-grams by default. Char n-grams survive typos and work on short
chat turns, where word n-grams of a 10-word text change wholesale after one edit; on the planted
set (`pipeline.planted`), 4-grams kept recall >= 0.99 at threshold 0.8 where 5-grams fell to ~0.94
under denser edits, and 3-grams merged more distinct neighbours. LSH banding proposes candidate
pairs; each is verified on its estimated Jaccard (>= `threshold`); verified pairs are grouped into
connected components (scipy), and each group keeps one row (`keep`). A group can chain: A~B and
B~C put A and C in one group even when A and C alone are below the threshold.

Cross-day near dedup: with `index_path`, the signatures of the rows each day kept are stored as
`index_path/day=YYYY-MM-DD.parquet`. A run reads the files of days EARLIER than the earliest day in
its frame, so re-running a day never matches it against its own earlier output, and rewrites its own
day's file (atomically): re-running a day gives the same result. A row near an earlier day's row
is dropped with that row's id as kept_id. A backfill of an older day does not reach back into days
already processed after it; re-materialize those to refresh them.

Short texts: MinHash of a few shingles is unreliable (one typo in "hello there" changes half its
4-grams, and unrelated short greetings share most of theirs). Rows whose normalized text is shorter
than `min_chars` are left out of near dedup (kept, counted as `skipped_short`); exact dedup still
removes their identical copies. Prompts cut from the same conversation share their history by
construction, so rows with the same `same_source_col` value (conversation_id) are never merged.
"""

from __future__ import annotations

import hashlib
import sys
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline import minhash, schema
from pipeline.minhash import BACKENDS

STAGE_EXACT = "exact_dedup"
STAGE_NEAR = "near_dedup"
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
SEEN_PREFIX = "seen:"
KEEP_POLICIES = ("first", "longest")
_NORMALIZATION_VERSION = "n1"

# --- normalization and hashing ---------------------------------------------------------------------

_APOSTROPHES = {ord(c): None for c in "'\u2019\u02bc\u2018`"}


@cache
def _punctuation_table() -> dict[int, str]:
    table = {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}
    table.update(_APOSTROPHES)
    return table


def normalize_text(s: str | None) -> str:
    """NFKC, casefold, apostrophes dropped, other punctuation to spaces, whitespace collapsed."""
    if not s:
        return ""
    s = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", s).casefold())
    return " ".join(s.translate(_punctuation_table()).split())


def text_hash(s: str | None) -> str:
    """Stable 32-hex-char key of the normalized text."""
    return hashlib.blake2b(normalize_text(s).encode(), digest_size=16).hexdigest()


def hash_texts(texts: Iterable[str | None]) -> list[str]:
    return [text_hash(t) for t in texts]


def _drops(
    day: pl.Series,
    row_id: Sequence[str],
    reason: str,
    stage: str,
    kept_id: Sequence[str],
    detail: Sequence[str],
) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "day": day,
            "stage": [stage] * len(row_id),
            "row_id": list(row_id),
            "reason_code": [reason] * len(row_id),
            "kept_id": list(kept_id),
            "detail": list(detail),
        },
        schema_overrides={"day": pl.Date, "row_id": pl.Utf8, "kept_id": pl.Utf8, "detail": pl.Utf8},
    )
    return schema.conform(frame, schema.DROPS)


def _check_columns(df: pl.DataFrame, fn: str, **cols: str | None) -> None:
    for arg, col in cols.items():
        if col is not None and col not in df.columns:
            raise ValueError(f"{fn}: frame has no column {col!r} for {arg} (columns: {df.columns}); pass {arg}=")


def _day_series(df: pl.DataFrame, day_col: str | None) -> pl.Series:
    if day_col is not None and day_col in df.columns:
        return df.get_column(day_col).cast(pl.Date)
    return pl.Series("day", [None] * df.height, dtype=pl.Date)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


# --- exact -----------------------------------------------------------------------------------------


@dataclass
class ExactDedupConfig:
    normalize: bool = field(
        default=True,
        metadata=_help(
            "Hash the normalized text (case, punctuation, whitespace, Unicode forms ignored). "
            "False hashes the raw text: only byte-identical rows are duplicates."
        ),
    )


@dataclass
class DedupResult:
    kept: pl.DataFrame  # the input rows kept, input order, plus `text_hash`
    drops: pl.DataFrame  # schema.DROPS
    hashes: pl.DataFrame  # (text_hash, <id_col>, day) of the kept rows: persist for later days' `seen`
    stats: dict[str, float | int] = field(default_factory=dict)


def _seen_hashes(seen: pl.DataFrame | pl.Series | Iterable[str] | None, first_day: date | None) -> set[str]:
    if seen is None:
        return set()
    if isinstance(seen, pl.DataFrame):
        if "text_hash" not in seen.columns:
            raise ValueError("exact_dedup: a `seen` frame needs a `text_hash` column")
        if "day" in seen.columns and first_day is not None:
            # rows of the day(s) being processed may be in there after an earlier run: ignore them
            seen = seen.filter(pl.col("day").cast(pl.Date) < first_day)
        return set(seen.get_column("text_hash").drop_nulls().to_list())
    if isinstance(seen, pl.Series):
        return set(seen.drop_nulls().to_list())
    return set(seen)


def exact_dedup(
    df: pl.DataFrame,
    seen: pl.DataFrame | pl.Series | Iterable[str] | None = None,
    config: ExactDedupConfig | None = None,
    text_col: str = "text",
    id_col: str = "prompt_id",
    day_col: str | None = "day",
) -> DedupResult:
    """Drop rows whose (normalized) text was already kept: earlier in (day, id) order, or on an earlier day.

    `seen` holds hashes kept on earlier days: a set/Series of hashes, or a frame with `text_hash`
    (and `day`, whereupon entries not earlier than the frame's first day are ignored, so passing
    the whole hash table on a re-run is safe). Stats: rows_in, rows_kept, exact_within,
    exact_cross_day, exact_dup_rate.
    """
    config = config or ExactDedupConfig()
    _check_columns(df, "exact_dedup", text_col=text_col, id_col=id_col)
    days = _day_series(df, day_col)
    texts = df.get_column(text_col).cast(pl.Utf8).to_list()
    if config.normalize:
        hashes = hash_texts(texts)
    else:
        hashes = [hashlib.blake2b((t or "").encode(), digest_size=16).hexdigest() for t in texts]
    ids = df.get_column(id_col).cast(pl.Utf8)
    first_day = days.min()
    seen_set = _seen_hashes(seen, first_day)  # type: ignore[arg-type]

    work = pl.DataFrame({"_i": np.arange(df.height), "_h": hashes, "_id": ids, "_day": days})
    order = work.sort(["_day", "_id", "_i"], nulls_last=True)
    first_of = order.group_by("_h", maintain_order=True).agg(
        _kept_id=pl.col("_id").first(), _kept_i=pl.col("_i").first()
    )
    work = work.join(first_of, on="_h", how="left").sort("_i")
    work = work.with_columns(_cross=pl.col("_h").is_in(list(seen_set)))
    work = work.with_columns(_within=(pl.col("_i") != pl.col("_kept_i")) & ~pl.col("_cross"))
    dw = work.filter(pl.col("_cross") | pl.col("_within")).with_columns(
        _kid=pl.when("_cross").then(pl.lit(SEEN_PREFIX) + pl.col("_h")).otherwise("_kept_id"),
        _detail=pl.when("_cross")
        .then(pl.lit("same normalized text kept on an earlier day"))
        .otherwise(pl.lit("same normalized text as the kept row")),
    )
    drops = _drops(
        dw.get_column("_day"),
        dw.get_column("_id").to_list(),
        EXACT_DUPLICATE,
        STAGE_EXACT,
        dw.get_column("_kid").to_list(),
        dw.get_column("_detail").to_list(),
    )
    cross, within = work.get_column("_cross"), work.get_column("_within")
    dropped = cross | within

    keep_mask = ~dropped
    kept = df.with_columns(pl.Series("text_hash", hashes, dtype=pl.Utf8)).filter(keep_mask)
    hashes_out = pl.DataFrame(
        {
            "text_hash": kept.get_column("text_hash"),
            id_col: ids.filter(keep_mask),
            "day": days.filter(keep_mask),
        }
    )
    n_cross, n_within = int(cross.sum()), int(within.sum())
    stats = {
        "rows_in": df.height,
        "rows_kept": kept.height,
        "exact_within": n_within,
        "exact_cross_day": n_cross,
        "exact_dup_rate": (n_cross + n_within) / df.height if df.height else 0.0,
    }
    return DedupResult(kept=kept, drops=drops, hashes=hashes_out, stats=stats)


# --- near ------------------------------------------------------------------------------------------


@dataclass
class NearDedupConfig:
    threshold: float = field(
        default=0.8,
        metadata=_help("Estimated Jaccard similarity of shingle sets at or above which two texts are duplicates."),
    )
    num_perm: int = field(default=128, metadata=_help("MinHash signature length; more is more precise, slower."))
    shingle: str = field(default="char", metadata=_help("'char' (character n-grams) or 'word' (word n-grams)."))
    shingle_size: int = field(
        default=4,
        metadata=_help("n of the n-grams. Char 4-grams suit chat (short turns, typos); 1-2 suits word shingles."),
    )
    min_chars: int = field(
        default=30,
        metadata=_help(
            "Normalized texts shorter than this are not near-deduped (MinHash of a few shingles is "
            "unreliable); exact dedup still removes their identical copies."
        ),
    )
    keep: str = field(
        default="first",
        metadata=_help("Row a group keeps: 'first' (earliest day, then smallest id) or 'longest' text."),
    )
    backend: str = field(
        default="rensa",
        metadata=_help(
            "MinHash library: 'rensa' (Rust, fast; needs the rensa package) or 'datasketch'. "
            "Signatures of the two differ: an index is tied to the backend that built it."
        ),
    )
    seed: int = field(default=1, metadata=_help("Seed of the MinHash permutations (fixed: stable signatures)."))
    lsh_recall: float = field(
        default=0.99,
        metadata=_help(
            "Chance that a pair exactly at the threshold becomes an LSH candidate; bands are chosen for it. "
            "Candidates are verified, so a high value costs time, not precision."
        ),
    )
    same_source_col: str | None = field(
        default="conversation_id",
        metadata=_help(
            "Rows sharing a value here are never merged (prompts cut from one conversation share their "
            "history). Ignored when the frame lacks the column; None disables."
        ),
    )
    index_days: int = field(
        default=0,
        metadata=_help("With an index, compare against this many most recent earlier days (0: all of them)."),
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"NearDedupConfig.threshold must be in (0, 1], got {self.threshold}")
        if not 16 <= self.num_perm <= 1024:
            raise ValueError(f"NearDedupConfig.num_perm must be in [16, 1024], got {self.num_perm}")
        if self.shingle not in ("char", "word"):
            raise ValueError(f"NearDedupConfig.shingle must be 'char' or 'word', got {self.shingle!r}")
        if self.shingle_size < 1:
            raise ValueError("NearDedupConfig.shingle_size must be >= 1")
        if self.shingle == "char" and self.min_chars < self.shingle_size:
            raise ValueError("NearDedupConfig.min_chars must be >= shingle_size for char shingles")
        if self.keep not in KEEP_POLICIES:
            raise ValueError(f"NearDedupConfig.keep must be one of {KEEP_POLICIES}, got {self.keep!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"NearDedupConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "rensa":
            try:
                import rensa  # noqa: F401
            except ImportError as exc:
                raise ValueError(
                    "NearDedupConfig.backend='rensa' needs the `rensa` package: install it, or set backend='datasketch'"
                ) from exc
        if not 0.5 <= self.lsh_recall < 1.0:
            raise ValueError(f"NearDedupConfig.lsh_recall must be in [0.5, 1), got {self.lsh_recall}")
        if self.index_days < 0:
            raise ValueError("NearDedupConfig.index_days must be >= 0 (0 means all earlier days)")

    def sketch_id(self) -> str:
        """Everything a stored signature depends on: an index built under another sketch is incomparable."""
        return minhash.sketch_id(
            self.backend, self.num_perm, self.seed, self.shingle, self.shingle_size, _NORMALIZATION_VERSION
        )

    def signatures(self, normalized: Sequence[str]) -> np.ndarray:
        return minhash.signatures(normalized, self.backend, self.num_perm, self.seed, self.shingle, self.shingle_size)


@dataclass
class NearDedupResult:
    kept: pl.DataFrame  # input rows kept, input order
    drops: pl.DataFrame  # schema.DROPS
    index_entries: pl.DataFrame  # (prompt_id, day, source_key, sketch, sig) of kept rows that have signatures
    stats: dict[str, float | int] = field(default_factory=dict)


def near_dedup(
    df: pl.DataFrame,
    config: NearDedupConfig | None = None,
    index_path: Path | str | None = None,
    text_col: str = "text",
    id_col: str = "prompt_id",
    day_col: str | None = "day",
) -> NearDedupResult:
    """Drop near-duplicates within the frame and, with `index_path`, of rows kept on earlier days.

    Writes this frame's days into the index (their kept rows' signatures) when `index_path` is given.
    Stats: rows_in, rows_kept, near_within, near_cross_day, near_dup_rate, groups, largest_group,
    skipped_short, candidate_pairs, verified_pairs (similar pairs merged), same_source_pairs (similar
    pairs left apart because they share a conversation), index_rows, bands, rows_per_band,
    sketch_seconds, seconds.
    """
    t0 = time.perf_counter()
    config = config or NearDedupConfig()
    _check_columns(df, "near_dedup", text_col=text_col, id_col=id_col)
    if index_path is not None and (day_col is None or day_col not in df.columns):
        raise ValueError(
            f"near_dedup: an index needs the day of each row; the frame has no day column {day_col!r} (pass day_col=)"
        )
    days = _day_series(df, day_col)
    ids = df.get_column(id_col).cast(pl.Utf8)
    src_col = config.same_source_col if config.same_source_col in df.columns else None
    sources = df.get_column(src_col).cast(pl.Utf8) if src_col else pl.Series([None] * df.height, dtype=pl.Utf8)
    normalized = [normalize_text(t) for t in df.get_column(text_col).cast(pl.Utf8).to_list()]
    eligible = np.array([len(t) >= config.min_chars for t in normalized], dtype=bool)
    cur = np.flatnonzero(eligible)

    t1 = time.perf_counter()
    sig_cur = config.signatures([normalized[i] for i in cur])
    sketch_seconds = time.perf_counter() - t1

    index = minhash.empty_index(config.num_perm)
    if index_path is not None:
        index = minhash.load_index(Path(index_path), config.sketch_id(), config.num_perm, days.min(), config.index_days)  # type: ignore[arg-type]
    n_cur, n_old = len(cur), index.height
    sig_old = index.get_column("sig").to_numpy().astype(np.uint32).reshape(n_old, config.num_perm)
    sig = np.vstack([sig_cur, sig_old]) if n_old else sig_cur

    # node k < n_cur is row cur[k] of the frame; node n_cur + m is index entry m
    node_id = ids.gather(cur).to_list() + index.get_column("prompt_id").to_list()
    node_day = days.gather(cur).to_list() + index.get_column("day").to_list()
    node_src = sources.gather(cur).to_list() + index.get_column("source_key").to_list()

    bands, rows = minhash.lsh_bands(config.threshold, config.num_perm, config.lsh_recall)
    pairs = minhash.candidate_pairs(sig, bands, rows)
    if n_old:
        pairs = pairs[pairs[:, 0] < n_cur]  # earlier days were deduped when they ran
    n_candidates = len(pairs)
    est = minhash.estimated_jaccard(sig, pairs)
    pairs = pairs[est >= config.threshold]
    n_same_source = 0
    if src_col and len(pairs):
        src = np.array(node_src, dtype=object)
        same = (src[pairs[:, 0]] == src[pairs[:, 1]]) & (src[pairs[:, 0]] != None)  # noqa: E711
        n_same_source = int(same.sum())
        pairs = pairs[~same]

    n_nodes = n_cur + n_old
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_nodes, n_nodes))
    _, comp = connected_components(graph, directed=False)

    # representative per component: an earlier day's row when there is one, else by the keep policy
    lengths = [len(normalized[i]) for i in cur] + [0] * n_old
    nodes = pl.DataFrame(
        {
            "node": np.arange(n_nodes),
            "comp": comp,
            "old": np.arange(n_nodes) >= n_cur,
            "day": pl.Series(node_day, dtype=pl.Date),
            "id": pl.Series(node_id, dtype=pl.Utf8),
            "len": lengths,
        }
    )
    size = nodes.group_by("comp").agg(size=pl.len(), has_cur=(~pl.col("old")).any())
    by = ["old", "len"] if config.keep == "longest" else ["old"]
    rep = (
        nodes.sort([*by, "day", "id"], descending=[True] * len(by) + [False, False], nulls_last=True)
        .group_by("comp", maintain_order=True)
        .agg(rep=pl.col("node").first())
    )
    nodes = nodes.join(rep, on="comp").join(size, on="comp").sort("node")
    rep_of = nodes.get_column("rep").to_numpy()
    dup_nodes = np.flatnonzero((rep_of != np.arange(n_nodes)) & (np.arange(n_nodes) < n_cur))

    rep_nodes = rep_of[dup_nodes]
    sims = (sig[dup_nodes] == sig[rep_nodes]).mean(axis=1) if len(dup_nodes) else np.zeros(0)
    cross = rep_nodes >= n_cur
    details = [
        f"estimated jaccard {s:.2f} with the kept row" + (f" of {node_day[r]}" if c else "")
        for s, r, c in zip(sims, rep_nodes, cross)
    ]
    drop_rows = cur[dup_nodes]
    drops = _drops(
        days.gather(drop_rows),
        ids.gather(drop_rows).to_list(),
        NEAR_DUPLICATE,
        STAGE_NEAR,
        [node_id[r] for r in rep_nodes],
        details,
    )

    keep_mask = np.ones(df.height, dtype=bool)
    keep_mask[drop_rows] = False
    kept = df.filter(pl.Series(keep_mask))
    kept_nodes = np.setdiff1d(np.arange(n_cur), dup_nodes)
    entries = pl.DataFrame(
        {
            "prompt_id": ids.gather(cur[kept_nodes]),
            "day": days.gather(cur[kept_nodes]),
            "source_key": sources.gather(cur[kept_nodes]),
            "sketch": [config.sketch_id()] * len(kept_nodes),
            "sig": pl.Series(sig_cur[kept_nodes], dtype=pl.Array(pl.UInt32, config.num_perm)),
        }
    )
    if index_path is not None:
        minhash.write_index(Path(index_path), entries, sorted(d for d in days.unique().to_list() if d is not None))

    groups = size.filter(pl.col("has_cur") & (pl.col("size") > 1))
    n_drop, n_cross = len(dup_nodes), int(cross.sum())
    stats = {
        "rows_in": df.height,
        "rows_kept": kept.height,
        "near_within": n_drop - n_cross,
        "near_cross_day": n_cross,
        "near_dup_rate": n_drop / df.height if df.height else 0.0,
        "groups": groups.height,
        "largest_group": int(groups.get_column("size").max() or 0),
        "skipped_short": int(df.height - len(cur)),
        "candidate_pairs": n_candidates,
        "verified_pairs": len(pairs),
        "same_source_pairs": n_same_source,
        "index_rows": n_old,
        "bands": bands,
        "rows_per_band": rows,
        "sketch_seconds": sketch_seconds,
        "seconds": time.perf_counter() - t0,
    }
    return NearDedupResult(kept=kept, drops=drops, index_entries=entries, stats=stats)
