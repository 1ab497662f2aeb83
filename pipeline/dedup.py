"""Exact and near-duplicate removal over a frame of texts (the `prompts` table: `text`, `prompt_id`).

Both steps see the text through `pipeline.text_hash.normalize_text` (case, punctuation, whitespace and
Unicode forms ignored; a null text normalizes like an empty one), applied before hashing and shingling.

Exact dedup keys each row by `text_hash` (`normalized_text_hashes`: blake2b-128 of the normalized text,
32 hex chars; stable across processes and library versions). Within the frame the first row in (day, id) order is kept;
a row whose hash was kept on an earlier day is dropped with kept_id `seen:<hash>`.

Near dedup: MinHash signatures (`pipeline.minhash`; `rensa` by default, or `datasketch`) of shingles
of the normalized text: character 4-grams by default. Char n-grams survive typos and work on short
chat turns, where word n-grams of a 10-word text change wholesale after one edit; on the planted
set (`pipeline.planted`), 4-grams kept recall >= 0.99 at threshold 0.8 where 5-grams fell to ~0.94
under denser edits, and 3-grams merged more distinct neighbours. The step runs in four parts, as
datatrove's MinHash pipeline does: signatures (`near_signatures`), candidate pairs from LSH bands
(`near_candidates`), clusters of verified pairs (`near_clusters`: estimated Jaccard >= `threshold`,
connected components) and the filter that keeps one row per cluster (`near_filter`). A group can
chain: A~B and B~C put A and C in one group even when A and C alone are below the threshold.

Cross-day (both steps), with a `pipeline.history.DayChain`: a day is decided against the rows kept
on the days before it and nothing else, so the result does not depend on the order in which days
were materialized; the day then commits what it kept. Each run carries a sorted key file
(`pipeline.keyfile`): exact dedup binary-searches the earlier days' hash files for the day's hashes,
near dedup their band-key files for the day's LSH band keys and reads back only the matched
signatures, so a lookup costs ~log(stored keys) per key and never holds the history in memory. A row
near an earlier day's row is dropped with that row's id as kept_id.

Short texts: MinHash of a few shingles is unreliable (one typo in "hello there" changes half its
4-grams, and unrelated short greetings share most of theirs). Rows whose normalized text is shorter
than `min_chars` are left out of near dedup (kept, counted as `skipped_short`); exact dedup still
removes their identical copies. Prompts cut from the same conversation share their history by
construction, so rows with the same `same_source_col` value (conversation_id) are never merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline import keyfile, minhash, schema
from pipeline.history import Compaction, DayChain, Run, days_covered
from pipeline.minhash import BACKENDS
from pipeline.step import StepCounters, StepResult
from pipeline.text_hash import NORMALIZATION_VERSION, normalize_text, normalized_text_hashes, raw_text_hashes

STAGE_EXACT = "exact_dedup"
STAGE_NEAR = "near_dedup"
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
SEEN_PREFIX = "seen:"
KEEP_POLICIES = ("first", "longest")
NEAR_COMPACTION = Compaction(merge_sidecars=minhash.merge_keys, row_group_size=minhash.ENTRY_ROW_GROUP)


def _drops(
    day: pl.Series,
    row_id: Sequence[str],
    reason: str,
    stage: str,
    kept_id: Sequence[str],
    detail: Sequence[str],
) -> pl.DataFrame:
    n = len(row_id)
    return schema.drops_frame(
        {
            "day": day.cast(pl.Date),
            "stage": pl.Series([stage] * n, dtype=pl.Utf8),
            "row_id": pl.Series(list(row_id), dtype=pl.Utf8),
            "reason_code": pl.Series([reason] * n, dtype=pl.Utf8),
            "kept_id": pl.Series(list(kept_id), dtype=pl.Utf8),
            "detail": pl.Series(list(detail), dtype=pl.Utf8),
        }
    )


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


def _one_day(days: pl.Series, fn: str, day: date | None = None) -> date:
    """The one day of a frame decided against a history (`day` names it, and must when the frame is empty)."""
    found = days.drop_nulls().unique().to_list()
    if days.null_count() or len(found) > 1 or (day is not None and found and found != [day]):
        raise ValueError(f"{fn}: cross-day history needs the rows of exactly one day, got days {sorted(found)}")
    if not found and day is None:
        raise ValueError(f"{fn}: an empty frame cannot tell its day: pass day= to commit it to the history")
    return day if day is not None else found[0]


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
    _check_columns(df, "exact_dedup", text_col=text_col, id_col=id_col)
    days = _day_series(df, day_col)
    texts = df.get_column(text_col).cast(pl.Utf8).to_list()
    hashes = normalized_text_hashes(texts) if config.normalize else raw_text_hashes(texts)
    ids = df.get_column(id_col).cast(pl.Utf8)
    day = _one_day(days, "exact_dedup", day) if history is not None else None
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
    drops = _drops(
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
    lookback_days: int | None = field(
        default=None,
        metadata=_help("With a history, compare against this many most recent earlier days (None: all of them)."),
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
        if self.lookback_days is not None and self.lookback_days < 1:
            raise ValueError("NearDedupConfig.lookback_days must be >= 1, or None for all earlier days")

    def sketch_id(self) -> str:
        """Everything a stored signature depends on: an index built under another sketch is incomparable."""
        return minhash.sketch_id(
            self.backend, self.num_perm, self.seed, self.shingle, self.shingle_size, NORMALIZATION_VERSION
        )

    def signatures(self, normalized: Sequence[str]) -> np.ndarray:
        return minhash.signatures(normalized, self.backend, self.num_perm, self.seed, self.shingle, self.shingle_size)

    def history_kind(self) -> str:
        """What a stored run depends on: a run made under another sketch or banding cannot be compared."""
        bands, rows = minhash.lsh_bands(self.threshold, self.num_perm, self.lsh_recall)
        return f"minhash|{self.sketch_id()}|b{bands}r{rows}"


@dataclass(frozen=True)
class NearCounters(StepCounters):
    near_within: int
    near_cross_day: int
    groups: int
    largest_group: int
    skipped_short: int
    candidate_pairs: int
    verified_pairs: int  # similar pairs merged
    same_source_pairs: int  # similar pairs left apart because they share a conversation
    history_days: int
    history_matches: int  # earlier days' rows sharing a band with a row of the day
    bands: int
    rows_per_band: int

    @property
    def dup_rate(self) -> float:
        return (self.near_within + self.near_cross_day) / self.rows_in if self.rows_in else 0.0


@dataclass
class NearSignatures:
    """Step 1: the rows near dedup looks at (`rows`: frame positions) and their signatures."""

    rows: np.ndarray
    sig: np.ndarray
    lengths: np.ndarray  # normalized text length per row in `rows` (the 'longest' keep policy)


@dataclass
class NearCandidates:
    """Step 2: nodes (the day's rows, then matched earlier rows) and the pairs sharing an LSH band."""

    sig: np.ndarray  # one row per node
    ids: list[str]
    days: list[date | None]
    sources: list[str | None]
    n_cur: int
    pairs: np.ndarray
    history_days: int


@dataclass
class NearClusters:
    """Step 3: verified pairs grouped; `rep[k]` is the node that node k's cluster keeps."""

    rep: np.ndarray
    groups: pl.DataFrame  # comp, size, has_cur
    n_candidates: int
    n_verified: int
    n_same_source: int


def near_signatures(df: pl.DataFrame, config: NearDedupConfig, text_col: str = "text") -> NearSignatures:
    normalized = [normalize_text(t) for t in df.get_column(text_col).cast(pl.Utf8).to_list()]
    rows = np.flatnonzero(np.array([len(t) >= config.min_chars for t in normalized], dtype=bool))
    return NearSignatures(
        rows=rows,
        sig=config.signatures([normalized[i] for i in rows]),
        lengths=np.array([len(normalized[i]) for i in rows], dtype=np.int64),
    )


def near_candidates(
    sigs: NearSignatures,
    ids: pl.Series,
    days: pl.Series,
    sources: pl.Series,
    config: NearDedupConfig,
    history: DayChain | None = None,
    day: date | None = None,
) -> NearCandidates:
    """Pairs among the day's rows sharing a band, plus pairs with earlier days' kept rows (from `history`)."""
    bands, rows = minhash.lsh_bands(config.threshold, config.num_perm, config.lsh_recall)
    n_cur = len(sigs.rows)
    node_ids = ids.gather(sigs.rows).to_list()
    node_days = days.gather(sigs.rows).to_list()
    node_src = sources.gather(sigs.rows).to_list()
    pairs = minhash.candidate_pairs(sigs.sig, bands, rows)
    sig = sigs.sig
    n_runs = 0
    if history is not None:
        runs = history.runs(_one_day(days, "near_dedup", day), config.lookback_days, NEAR_COMPACTION)
        n_runs = days_covered(runs)
        cur_keys = minhash.keys_frame(minhash.band_keys(sigs.sig, bands, rows))
        old, old_pairs = minhash.history_matches(runs, cur_keys)
        if old.height:
            sig = np.vstack([sig, old["sig"].to_numpy().astype(np.uint32).reshape(old.height, config.num_perm)])
            node_ids += old["prompt_id"].to_list()
            node_days += old["day"].to_list()
            node_src += old["source_key"].to_list()
            old_pairs[:, 1] += n_cur
            pairs = np.vstack([pairs, old_pairs])
    return NearCandidates(sig, node_ids, node_days, node_src, n_cur, pairs, n_runs)


def near_clusters(cand: NearCandidates, lengths: np.ndarray, config: NearDedupConfig) -> NearClusters:
    """Verify candidates on estimated Jaccard, group them (connected components), pick each group's keeper:
    an earlier day's row when there is one (it was kept already), else by the keep policy."""
    pairs = cand.pairs
    n_candidates = len(pairs)
    pairs = pairs[minhash.estimated_jaccard(cand.sig, pairs) >= config.threshold]
    n_same_source = 0
    if len(pairs):
        src = np.array(cand.sources, dtype=object)
        same = (src[pairs[:, 0]] == src[pairs[:, 1]]) & (src[pairs[:, 0]] != None)  # noqa: E711
        n_same_source = int(same.sum())
        pairs = pairs[~same]
    n_nodes = len(cand.ids)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_nodes, n_nodes))
    _, comp = connected_components(graph, directed=False)
    nodes = pl.DataFrame(
        {
            "node": np.arange(n_nodes),
            "comp": comp,
            "old": np.arange(n_nodes) >= cand.n_cur,
            "day": pl.Series(cand.days, dtype=pl.Date),
            "id": pl.Series(cand.ids, dtype=pl.Utf8),
            "len": np.concatenate([lengths, np.zeros(n_nodes - cand.n_cur, dtype=np.int64)]),
        }
    )
    groups = nodes.group_by("comp").agg(size=pl.len(), has_cur=(~pl.col("old")).any())
    by = ["old", "len"] if config.keep == "longest" else ["old"]
    rep = (
        nodes.sort([*by, "day", "id"], descending=[True] * len(by) + [False, False], nulls_last=True)
        .group_by("comp", maintain_order=True)
        .agg(rep=pl.col("node").first())
    )
    rep_of = nodes.join(rep, on="comp").sort("node").get_column("rep").to_numpy()
    return NearClusters(rep_of, groups, n_candidates, len(pairs), n_same_source)


def near_filter(
    df: pl.DataFrame,
    ids: pl.Series,
    days: pl.Series,
    sigs: NearSignatures,
    cand: NearCandidates,
    clusters: NearClusters,
) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray, int]:
    """Keep each cluster's keeper; every other row of the day is a drop naming the row it duplicates.
    Returns kept rows, drops, the kept nodes (positions among the day's signed rows), cross-day drops."""
    n_cur = cand.n_cur
    dup_nodes = np.flatnonzero((clusters.rep != np.arange(len(clusters.rep))) & (np.arange(len(clusters.rep)) < n_cur))
    rep_nodes = clusters.rep[dup_nodes]
    sims = (cand.sig[dup_nodes] == cand.sig[rep_nodes]).mean(axis=1) if len(dup_nodes) else np.zeros(0)
    cross = rep_nodes >= n_cur
    details = [
        f"estimated jaccard {s:.2f} with the kept row" + (f" of {cand.days[r]}" if c else "")
        for s, r, c in zip(sims, rep_nodes, cross)
    ]
    drop_rows = sigs.rows[dup_nodes]
    drops = _drops(
        days.gather(drop_rows),
        ids.gather(drop_rows).to_list(),
        NEAR_DUPLICATE,
        STAGE_NEAR,
        [cand.ids[r] for r in rep_nodes],
        details,
    )
    keep_mask = np.ones(df.height, dtype=bool)
    keep_mask[drop_rows] = False
    return df.filter(pl.Series(keep_mask)), drops, np.setdiff1d(np.arange(n_cur), dup_nodes), int(cross.sum())


def near_dedup(
    df: pl.DataFrame,
    config: NearDedupConfig | None = None,
    history: DayChain | None = None,
    text_col: str = "text",
    id_col: str = "prompt_id",
    day_col: str | None = "day",
    day: date | None = None,
) -> StepResult[NearCounters]:
    """Drop near-duplicates within the frame and, with `history`, of rows kept on earlier days.

    With `history` the frame holds one day; the signatures (and band keys) of the rows it keeps are
    committed as that day's run.
    """
    config = config or NearDedupConfig()
    _check_columns(df, "near_dedup", text_col=text_col, id_col=id_col)
    if history is not None and (day_col is None or day_col not in df.columns):
        raise ValueError(
            f"near_dedup: a history needs the day of each row; the frame has no day column {day_col!r} (pass day_col=)"
        )
    days = _day_series(df, day_col)
    ids = df.get_column(id_col).cast(pl.Utf8)
    src_col = config.same_source_col if config.same_source_col in df.columns else None
    sources = df.get_column(src_col).cast(pl.Utf8) if src_col else pl.Series([None] * df.height, dtype=pl.Utf8)

    sigs = near_signatures(df, config, text_col)
    cand = near_candidates(sigs, ids, days, sources, config, history, day)
    clusters = near_clusters(cand, sigs.lengths, config)
    kept, drops, kept_nodes, n_cross = near_filter(df, ids, days, sigs, cand, clusters)

    bands, rows = minhash.lsh_bands(config.threshold, config.num_perm, config.lsh_recall)
    if history is not None:
        kept_sig = sigs.sig[kept_nodes]
        entries = minhash.run_entries(
            ids.gather(sigs.rows[kept_nodes]).to_list(),
            days.gather(sigs.rows[kept_nodes]).to_list(),
            sources.gather(sigs.rows[kept_nodes]).to_list(),
            kept_sig,
        )
        history.commit(
            _one_day(days, "near_dedup", day),
            entries,
            sidecars={"keys": lambda path: minhash.write_keys(path, kept_sig, bands, rows)},
            row_group_size=minhash.ENTRY_ROW_GROUP,
            compaction=NEAR_COMPACTION,
        )
    groups = clusters.groups.filter(pl.col("has_cur") & (pl.col("size") > 1))
    counters = NearCounters(
        rows_in=df.height,
        rows_kept=kept.height,
        near_within=drops.height - n_cross,
        near_cross_day=n_cross,
        groups=groups.height,
        largest_group=int(groups.get_column("size").max() or 0),
        skipped_short=int(df.height - len(sigs.rows)),
        candidate_pairs=clusters.n_candidates,
        verified_pairs=clusters.n_verified,
        same_source_pairs=clusters.n_same_source,
        history_days=cand.history_days,
        history_matches=len(cand.ids) - cand.n_cur,
        bands=bands,
        rows_per_band=rows,
    )
    return StepResult(kept=kept, drops=drops, counters=counters)
