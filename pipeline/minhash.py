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

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

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


def candidate_pairs(sig: np.ndarray, bands: int, rows: int, max_bucket: int = 64) -> np.ndarray:
    """Index pairs (i < j) sharing at least one LSH band. A bucket larger than `max_bucket` contributes
    a star around its first member instead of all its pairs, so one huge bucket cannot blow up."""
    n = sig.shape[0]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    parts = []
    for b in range(bands):
        keys = pl.DataFrame(sig[:, b * rows : (b + 1) * rows]).hash_rows(seed=17)
        parts.append(pl.DataFrame({"band": np.full(n, b, dtype=np.int32), "key": keys, "i": np.arange(n)}))
    buckets = (
        pl.concat(parts).group_by("band", "key").agg(pl.col("i").sort()).filter(pl.col("i").list.len() > 1).select("i")
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


# --- per-day signature index: one file per day, so days run in parallel never write the same file ---

_INDEX_FILE = re.compile(r"^day=(\d{4}-\d{2}-\d{2})\.parquet$")


def empty_index(num_perm: int) -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "prompt_id": pl.Utf8,
            "day": pl.Date,
            "source_key": pl.Utf8,
            "sketch": pl.Utf8,
            "sig": pl.Array(pl.UInt32, num_perm),
        }
    )


def load_index(index_path: Path, sketch: str, num_perm: int, before: date | None, last_days: int = 0) -> pl.DataFrame:
    """Stored entries of days earlier than `before` (all when None); the newest `last_days` days if > 0."""
    files = []
    if index_path.is_dir():
        for f in sorted(index_path.iterdir()):
            m = _INDEX_FILE.match(f.name)
            if m and (before is None or date.fromisoformat(m.group(1)) < before):
                files.append(f)
    if last_days:
        files = files[-last_days:]
    if not files:
        return empty_index(num_perm)
    index = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    found = set(index.get_column("sketch").unique().to_list())
    if found - {sketch}:
        raise ValueError(
            f"near-dedup index at {index_path} holds signatures of {sorted(found)}, this config makes "
            f"{sketch!r}: set backend/num_perm/seed/shingle/shingle_size to match, or use a fresh index_path"
        )
    return index


def write_index(index_path: Path, entries: pl.DataFrame, days: Iterable[date]) -> list[Path]:
    """Replace each day's file with that day's entries (temp file, then rename: never half-written)."""
    index_path.mkdir(parents=True, exist_ok=True)
    written = []
    for d in days:
        target = index_path / f"day={d.isoformat()}.parquet"
        fd, tmp = tempfile.mkstemp(dir=index_path, prefix=".tmp-", suffix=".parquet")
        os.close(fd)
        try:
            entries.filter(pl.col("day") == d).write_parquet(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        written.append(target)
    return written
