"""Near-duplicate removal over a frame of texts (the `prompts` table: `text`, `prompt_id`).

MinHash signatures (`pipeline.minhash`; `rensa` by default, or `datasketch`) of shingles of the normalized
text: character 4-grams by default. Char n-grams survive typos and work on short chat turns, where word
n-grams of a 10-word text change wholesale after one edit; on the planted set (`pipeline.planted`), 4-grams
kept recall >= 0.99 at threshold 0.8 where 5-grams fell to ~0.94 under denser edits, and 3-grams merged more
distinct neighbours. The step runs in four parts, as datatrove's MinHash pipeline does: signatures
(`near_signatures`), candidate pairs from LSH bands (`near_candidates`), clusters of verified pairs
(`near_clusters`: estimated Jaccard >= `threshold`, connected components) and the filter that keeps one row
per cluster (`near_filter`). A group can chain: A~B and B~C put A and C in one group even when A and C alone
are below the threshold.

Across days, the earlier days' band-key files (`pipeline.keyfile`) are searched for the day's LSH band keys
and only the matched signatures are read back. A row near an earlier day's row is dropped with that row's id
as kept_id.

Short texts: MinHash of a few shingles is unreliable (one typo in "hello there" changes half its 4-grams, and
unrelated short greetings share most of theirs). Rows whose normalized text is shorter than `min_chars` are
left out (kept, counted as `skipped_short`); exact dedup still removes their identical copies. Prompts cut
from the same conversation share their history by construction, so rows with the same `same_source_col`
value (conversation_id) are never merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline import minhash
from pipeline.dedup import check_columns, day_series, dedup_drops, help_text, one_day
from pipeline.history import Compaction, DayChain, days_covered
from pipeline.minhash import BACKENDS
from pipeline.step import StepCounters, StepResult
from pipeline.text_hash import NORMALIZATION_VERSION, normalize_text

STAGE_NEAR = "near_dedup"
NEAR_DUPLICATE = "near_duplicate"
KEEP_POLICIES = ("first", "longest")
NEAR_COMPACTION = Compaction(merge_sidecars=minhash.merge_keys, row_group_size=minhash.ENTRY_ROW_GROUP)


# --- near ------------------------------------------------------------------------------------------


@dataclass
class NearDedupConfig:
    threshold: float = field(
        default=0.8,
        metadata=help_text("Estimated Jaccard similarity of shingle sets at or above which two texts are duplicates."),
    )
    num_perm: int = field(default=128, metadata=help_text("MinHash signature length; more is more precise, slower."))
    shingle: str = field(default="char", metadata=help_text("'char' (character n-grams) or 'word' (word n-grams)."))
    shingle_size: int = field(
        default=4,
        metadata=help_text("n of the n-grams. Char 4-grams suit chat (short turns, typos); 1-2 suits word shingles."),
    )
    min_chars: int = field(
        default=30,
        metadata=help_text(
            "Normalized texts shorter than this are not near-deduped (MinHash of a few shingles is "
            "unreliable); exact dedup still removes their identical copies."
        ),
    )
    keep: str = field(
        default="first",
        metadata=help_text("Row a group keeps: 'first' (earliest day, then smallest id) or 'longest' text."),
    )
    backend: str = field(
        default="rensa",
        metadata=help_text(
            "MinHash library: 'rensa' (Rust, fast; needs the rensa package) or 'datasketch'. "
            "Signatures of the two differ: an index is tied to the backend that built it."
        ),
    )
    seed: int = field(default=1, metadata=help_text("Seed of the MinHash permutations (fixed: stable signatures)."))
    lsh_recall: float = field(
        default=0.99,
        metadata=help_text(
            "Chance that a pair exactly at the threshold becomes an LSH candidate; bands are chosen for it. "
            "Candidates are verified, so a high value costs time, not precision."
        ),
    )
    same_source_col: str | None = field(
        default="conversation_id",
        metadata=help_text(
            "Rows sharing a value here are never merged (prompts cut from one conversation share their "
            "history). Ignored when the frame lacks the column; None disables."
        ),
    )
    lookback_days: int | None = field(
        default=None,
        metadata=help_text("With a history, compare against this many most recent earlier days (None: all of them)."),
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
        runs = history.runs(one_day(days, "near_dedup", day), config.lookback_days, NEAR_COMPACTION)
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
    drops = dedup_drops(
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
    check_columns(df, "near_dedup", text_col=text_col, id_col=id_col)
    if history is not None and (day_col is None or day_col not in df.columns):
        raise ValueError(
            f"near_dedup: a history needs the day of each row; the frame has no day column {day_col!r} (pass day_col=)"
        )
    days = day_series(df, day_col)
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
            one_day(days, "near_dedup", day),
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
