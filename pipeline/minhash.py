"""MinHash signatures, LSH banding and the per-day signature index behind near-duplicate removal.

Signatures come from a library: `rensa` (Rust) or `datasketch`. For rensa with character
shingles, the shingles are hashed to 64 bits in numpy over the whole batch at once (a rolling
hash over code points) and handed over as one flat buffer, so no Python object is made per
shingle: Python-side shingling would cost more than the MinHash itself. Word shingles, and the
datasketch backend, go through the libraries' own string hashing.

Candidate pairs come from LSH banding done as vectorized polars/numpy over the signature matrix,
so signatures stored on earlier days join the same pass (datasketch's LSH index is one Python call
per row; rensa's cannot be rebuilt from stored signatures). Bands are sized so that a pair at the
threshold becomes a candidate with a chosen probability; callers verify candidates on their
estimated Jaccard, so extra candidates cost time, not precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import keyfile

BACKENDS = ("rensa", "datasketch")
_HASH_VERSION = "cp64v1"  # how char shingles are hashed for rensa; part of every stored signature's id
_MUL = np.uint64(0x9E3779B97F4A7C15)
_BATCH_CHARS = 4_000_000  # code points per numpy batch: bounds memory at ~200 MB


def sketch_id(backend: str, num_perm: int, seed: int, shingle: str, size: int, normalization: str) -> str:
    """Everything a signature depends on: signatures of different ids are incomparable."""
    if backend == "rensa":
        import rensa

        algo = f"rensa-r{rensa.RMinHash.ALGORITHM_VERSION}" + (f"-{_HASH_VERSION}" if shingle == "char" else "")
    else:
        algo = "datasketch-affine32"
    return f"{algo}|p{num_perm}|s{seed}|{shingle}{size}|{normalization}"


def shingles(normalized: str, shingle: str, size: int) -> set[str]:
    if shingle == "word":
        words = normalized.split()
        return {" ".join(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}
    return {normalized[i : i + size] for i in range(max(1, len(normalized) - size + 1))}


def char_shingle_hashes(texts: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every char `size`-gram of each text, flat, with row offsets (len(texts) + 1).

    A text shorter than `size` contributes one shingle: the whole text.
    """
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    padded = [t if len(t) >= size else t.ljust(size, "\0") for t in texts]
    lens = np.maximum(lens, size)
    cps = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    m = len(cps) - size + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(size):
            h = (h ^ cps[j : j + m]) * _MUL
        h ^= h >> np.uint64(29)  # final mix so that nearby code points spread over all 64 bits
        h *= _MUL
        h ^= h >> np.uint64(32)
    counts = lens - size + 1
    starts = np.cumsum(lens) - lens
    offsets = np.zeros(len(texts) + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    first = np.repeat(starts - offsets[:-1].astype(np.int64), counts)
    return h[np.arange(int(offsets[-1])) + first], offsets


def _batches(texts: Sequence[str]) -> Iterable[tuple[int, int]]:
    start, chars = 0, 0
    for i, t in enumerate(texts):
        chars += len(t)
        if chars >= _BATCH_CHARS:
            yield start, i + 1
            start, chars = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


def signatures(
    normalized: Sequence[str], backend: str, num_perm: int, seed: int, shingle: str, size: int
) -> np.ndarray:
    """MinHash signatures (len(normalized), num_perm) uint32 of already-normalized texts."""
    if len(normalized) == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    if backend == "rensa":
        import rensa

        if shingle == "char":
            out = []
            for a, b in _batches(normalized):
                hashes, offsets = char_shingle_hashes(normalized[a:b], size)
                matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, num_perm, seed)
                out.append(np.asarray(matrix.to_rows(), dtype=np.uint32))
            return np.vstack(out)
        sets = [shingles(t, shingle, size) for t in normalized]
        return np.asarray(rensa.RMinHash.digests_from_token_sets(sets, num_perm, seed), dtype=np.uint32)
    from datasketch import MinHash

    encoded = ([s.encode() for s in shingles(t, shingle, size)] for t in normalized)
    return np.vstack([m.hashvalues for m in MinHash.bulk(encoded, num_perm=num_perm, seed=seed)]).astype(np.uint32)


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm: the most rows per band (fewest spurious candidates)
    such that a pair of Jaccard `threshold` shares at least one band with probability >= recall."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1.0 - (1.0 - threshold**r) ** b >= recall:
            return b, r
    return num_perm, 1


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 key of each band of each signature: a fixed multiply-xor mix, so keys stored on
    one day compare with keys computed on another (a library's row hash may change between versions)."""
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            h = np.full(sig.shape[0], np.uint64(b + 1), dtype=np.uint64)
            for j in range(b * rows, (b + 1) * rows):
                h = (h ^ sig[:, j].astype(np.uint64)) * _MUL
                h ^= h >> np.uint64(31)
            keys[:, b] = h
    return keys


def keys_frame(keys: np.ndarray) -> pl.DataFrame:
    """Band keys in long form (band, key, row): what a join on shared bands needs."""
    n, bands = keys.shape
    return pl.DataFrame(
        {
            "band": np.tile(np.arange(bands, dtype=np.uint16), n),
            "key": keys.reshape(-1),
            "row": np.repeat(np.arange(n, dtype=np.uint32), bands),
        }
    )


def candidate_pairs(sig: np.ndarray, bands: int, rows: int, max_bucket: int = 64) -> np.ndarray:
    """Index pairs (i < j) sharing at least one LSH band. A bucket larger than `max_bucket` contributes
    a star around its first member instead of all its pairs, so one huge bucket cannot blow up."""
    n = sig.shape[0]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    buckets = (
        keys_frame(band_keys(sig, bands, rows))
        .group_by("band", "key")
        .agg(i=pl.col("row").cast(pl.Int64).sort())
        .filter(pl.col("i").list.len() > 1)
        .select("i")
    )
    if buckets.height == 0:
        return np.zeros((0, 2), dtype=np.int64)
    small = buckets.filter(pl.col("i").list.len() <= max_bucket).with_columns(j=pl.col("i"))
    pairs = small.explode("i").explode("j").filter(pl.col("i") < pl.col("j"))
    big = buckets.filter(pl.col("i").list.len() > max_bucket)
    if big.height:
        star = big.select(i=pl.col("i").list.first(), j=pl.col("i").list.slice(1)).explode("j")
        pairs = pl.concat([pairs, star])
    return pairs.unique().sort("i", "j").to_numpy().astype(np.int64)


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        out[s : s + chunk] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    return out


# --- earlier days' kept signatures: one run per day (pipeline.history), queried without loading them ---

ENTRY_ROW_GROUP = 2048  # rows per Parquet row group of a run: a candidate reads only its own group


def run_entries(
    ids: Sequence[str], days: Sequence[date], sources: Sequence[str | None], sig: np.ndarray
) -> pl.DataFrame:
    """A day's kept signatures as a run: (prompt_id, day, source_key, sig)."""
    return pl.DataFrame(
        {
            "prompt_id": pl.Series(list(ids), dtype=pl.Utf8),
            "day": pl.Series(list(days), dtype=pl.Date),
            "source_key": pl.Series(list(sources), dtype=pl.Utf8),
            "sig": pl.Series(sig, dtype=pl.Array(pl.UInt32, sig.shape[1])),
        }
    )


def _packed_keys(keys: np.ndarray) -> np.ndarray:
    """A run's band keys as a key file (`pipeline.keyfile`): row 0 the keys, row 1 band << 32 | entry row."""
    n, bands = keys.shape
    band = np.tile(np.arange(bands, dtype=np.uint64), n)
    row = np.repeat(np.arange(n, dtype=np.uint64), bands)
    return np.vstack([keys.reshape(-1), (band << np.uint64(32)) | row])


def write_keys(path: Path, sig: np.ndarray, bands: int, rows: int) -> None:
    """The band keys of a run as a sorted key file (see `read_keys`)."""
    keyfile.save(path, _packed_keys(band_keys(sig, bands, rows)))


def read_keys(path: Path) -> np.ndarray:
    """A run's key file, memory-mapped. Key files of earlier releases (Parquet: band, key, row) are read
    whole and converted, so an existing history keeps working."""
    if keyfile.is_keyfile(path):
        return keyfile.load(path)
    old = pl.read_parquet(path).sort("key")
    band = old["band"].to_numpy().astype(np.uint64)
    return np.vstack([old["key"].to_numpy().astype(np.uint64), (band << np.uint64(32)) | old["row"].to_numpy()])


def lookup_keys(stored: np.ndarray, keys: np.ndarray, bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probe position, stored entry row) of every stored key equal to a probe's key in the same band."""
    probe, found = keyfile.match(stored, keys)
    same_band = (found[1] >> np.uint64(32)) == bands[probe].astype(np.uint64)
    return probe[same_band], (found[1][same_band] & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _read_rows(path: Path, wanted: np.ndarray) -> pl.DataFrame:
    """Rows `wanted` (sorted, distinct) of a run: only the row groups holding them are read."""
    import pyarrow.parquet as pq

    groups = np.unique(wanted // ENTRY_ROW_GROUP).tolist()
    table = pl.from_arrow(pq.ParquetFile(path).read_row_groups(groups))
    offsets = np.concatenate([[g * ENTRY_ROW_GROUP] for g in groups])
    # row r sits in group r // G at position r % G; groups were read in order, each G rows long but the last
    local = np.searchsorted(offsets, wanted, side="right") - 1
    return table[local * ENTRY_ROW_GROUP + (wanted - offsets[local])]


def history_matches(runs: list, cur_keys: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Earlier days' entries sharing a band with a current row.

    `runs` are `pipeline.history.Run`s with a `keys` sidecar; `cur_keys` is `keys_frame` of the current
    rows. Returns (entries of the matched earlier rows, one per row, with their `sig`) and the pairs
    (current row, index into those entries). Each run's sorted key file is memory-mapped and
    binary-searched for the day's keys, and only the row groups holding a match are read back, so
    neither the time nor the memory of a run's lookup follows the number of keys it stores.
    """
    if not runs or cur_keys.height == 0:
        return pl.DataFrame(), np.zeros((0, 2), dtype=np.int64)
    cur_keys = cur_keys.sort("key")  # sorted once for the lookups in every run
    probe_keys = cur_keys["key"].to_numpy()
    probe_bands = cur_keys["band"].to_numpy()
    probe_nodes = cur_keys["row"].to_numpy().astype(np.int64)
    parts, pairs, offset = [], [], 0
    for run in runs:
        probe, row = lookup_keys(read_keys(run.sidecars["keys"]), probe_keys, probe_bands)
        if not len(row):
            continue
        wanted, entry = np.unique(row, return_inverse=True)
        parts.append(_read_rows(run.path, wanted))
        pairs.append(np.unique(np.column_stack([probe_nodes[probe], entry + offset]), axis=0))
        offset += len(wanted)
    if not parts:
        return pl.DataFrame(), np.zeros((0, 2), dtype=np.int64)
    return pl.concat(parts), np.vstack(pairs).astype(np.int64)


def merge_keys(pieces: list, offsets: list[int], stem: Path) -> dict[str, Path]:
    """The keys sidecar of merged runs: each piece's keys with its rows shifted to the merged entries
    (rows are the low 32 bits; a segment holds far fewer than 2^32 entries)."""
    parts = []
    for p, off in zip(pieces, offsets):
        stored = np.array(read_keys(p.sidecars["keys"]))
        stored[1] += np.uint64(off)
        parts.append(stored)
    path = stem.with_name(stem.name + ".keys")
    keyfile.save(path, np.hstack(parts))
    return {"keys": path}
