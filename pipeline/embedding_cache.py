"""The embedding cache: every vector in the lake, keyed by (text hash, model id).

The model id names the backend too, so vectors of different backends never mix.

Layout under ``<root>/model=<slug>/``:
- ``<part>.parquet``: (text_hash, model_id, vector) rows, one part per `add`, never rewritten;
- ``index/manifest.json``: the parts in the order they were indexed, and the key files that index them;
- ``index/keys-<id>.npy``: a sorted key file (`pipeline.keyfile`) of (hash high word, hash low word,
  part number, row).

A lookup binary-searches each key file for the wanted hashes (memory-mapped: it touches only the pages
its keys land on) and then reads the vectors of the row groups that hold hits, so its cost follows the
number of hashes asked for and found, not the history: no part's hash column is scanned. Key files merge
four of a size into one (size tiers), so a history of H rows has O(log H) of them, up to a merged size
(`MAX_MERGED_ROWS`, 8.4M rows) past which a merge's memory would grow with the history.

Writers of different days can run at once: a part is written under a fresh name first, then indexed
under a lock (the manifest is replaced by rename), and key files that a merge replaced are removed only
after the new manifest is in place; a reader that finds one gone reads the manifest again. A crash
between a part and its index leaves a part that the next writer indexes; a cache written before the
index existed (parts only) is indexed on first use, reading each part's hashes once.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import keyfile
from pipeline.crash import crash_point
from pipeline.durable import durable_replace
from pipeline.embed_config import slug
from pipeline.lake import atomic_write_text
from pipeline.locks import writer_lock

_EMPTY_HITS = pl.DataFrame(schema={"text_hash": pl.Utf8})
_ROW_GROUP = 1024  # small row groups: a lookup reads vectors only from the groups that hold hits
_HEX128 = re.compile(r"^[0-9a-f]{32}$")
INDEX_FORMAT = 1
# key files merge `MERGE_FANIN` at a time once that many share a size tier (tiers grow by this factor)
MERGE_FANIN = 4
# a merge holds its key files in memory (32 bytes a row, about three times over while sorting): past this
# size, key files stay apart, so a merge's memory is bounded whatever the history, and a lookup searches
# one more file per this many rows
MAX_MERGED_ROWS = 1 << 23
_TIER_BASE_ROWS = 4096
# a manifest read while a merge removes the key files it names is read again, this many times at most
_READ_RETRIES = 5


class EmbeddingCache:
    """Vectors of one model id in Parquet parts under ``<root>/model=<slug>/``, with a key index."""

    def __init__(self, root: Path | str, model_id: str):
        self.root = Path(root)
        self.model_id = model_id
        self.dir = self.root / f"model={slug(model_id)}"
        self.index_dir = self.dir / "index"

    def files(self) -> list[Path]:
        return [self.dir / f"{name}.parquet" for name in self._part_names()]

    def _part_names(self) -> list[str]:
        """Names of the parts on disk, sorted. A writer lists them to index any the manifest misses: names
        only (one directory read, microseconds per part), never a part's content."""
        try:
            with os.scandir(self.dir) as entries:
                names = [e.name[: -len(".parquet")] for e in entries if e.name.endswith(".parquet")]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith("."))

    def count(self) -> int:
        """Rows stored (duplicates from concurrent writers included)."""
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files())

    def index_files(self) -> int:
        """Key files a lookup searches (O(log rows stored))."""
        manifest = self._manifest()
        return len(manifest["indexes"]) if manifest else 0

    # ---- lookup ---------------------------------------------------------------------------------

    def lookup(self, hashes: Sequence[str]) -> pl.DataFrame:
        """The stored (text_hash, vector) of those of `hashes` that are cached, one row per hash."""
        wanted = [h for h in dict.fromkeys(hashes) if isinstance(h, str) and _HEX128.match(h)]
        if not wanted or not self.dir.is_dir():
            return _EMPTY_HITS.clear()
        words = _words(wanted)
        order = np.argsort(words[0], kind="stable")  # sorted probes walk each key file front to back
        words = words[:, order]
        wanted = [wanted[i] for i in order]
        for attempt in range(_READ_RETRIES):
            manifest = self._manifest() or self._index_unlisted()
            try:
                found = self._probe(manifest, words)
                break
            except FileNotFoundError:  # a merge replaced a key file after the manifest was read
                if attempt == _READ_RETRIES - 1:
                    raise
        probe, part_no, row = found
        if not probe.size:
            return _EMPTY_HITS.clear()
        # a text stored by two concurrent writers: the part indexed first answers
        first = np.lexsort((row, part_no, probe))
        probe, part_no, row = probe[first], part_no[first], row[first]
        keep = np.ones(probe.size, dtype=bool)
        keep[1:] = probe[1:] != probe[:-1]
        probe, part_no, row = probe[keep], part_no[keep], row[keep]
        parts: list[pl.DataFrame] = []
        for p in np.unique(part_no):
            at = part_no == p
            path = self.dir / f"{manifest['parts'][int(p)]}.parquet"
            parts.append(_read_rows(path, row[at], [wanted[i] for i in probe[at]]))
        return pl.concat(parts)

    def _probe(self, manifest: dict, words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index into the probes, part number, row) of every stored entry of a probed hash."""
        probes, part_nos, rows = [], [], []
        for entry in manifest["indexes"]:
            probe, stored = keyfile.match(keyfile.load(self.index_dir / entry["file"]), words[0])
            same = stored[1] == words[1][probe]
            probes.append(probe[same])
            part_nos.append(stored[2][same].astype(np.int64))
            rows.append(stored[3][same].astype(np.int64))
        if not probes:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(probes), np.concatenate(part_nos), np.concatenate(rows)

    # ---- add ------------------------------------------------------------------------------------

    def add(self, frame: pl.DataFrame, part: str | None = None) -> Path | None:
        """Store (text_hash, vector) rows as a new part and index it; returns its path (None when `frame`
        is empty). Hashes are the 32 hex digits of `pipeline.text_hash`."""
        if frame.height == 0:
            return None
        if "text_hash" not in frame.columns or "vector" not in frame.columns:
            raise ValueError("an embedding cache frame needs the columns text_hash and vector")
        vec = frame["vector"]
        if not isinstance(vec.dtype, pl.Array):
            dim = len(vec[0])
            vec = vec.cast(pl.Array(pl.Float32, dim))
        out = pl.DataFrame(
            {
                "text_hash": frame["text_hash"].cast(pl.Utf8),
                "model_id": pl.Series([self.model_id] * frame.height, dtype=pl.Utf8),
                "vector": vec.cast(pl.Array(pl.Float32, vec.dtype.size)),
            }
        ).unique("text_hash", keep="first", maintain_order=True)
        bad = out.filter(~pl.col("text_hash").str.contains(_HEX128.pattern))["text_hash"].head(3).to_list()
        if bad:
            raise ValueError(
                f"embedding cache text hashes must be 32 lowercase hex digits (pipeline.text_hash), got {bad}: "
                "key the vectors with raw_text_hashes(texts)"
            )
        name = part or f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        if not re.match(r"^[A-Za-z0-9_\-]+$", name):
            raise ValueError(f"bad embedding cache part name {name!r}")
        path = self.dir / f"{name}.parquet"
        if path.exists():
            raise ValueError(f"embedding cache part {name!r} exists and parts are never rewritten: pass another name")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp-{uuid.uuid4().hex}"
        try:
            out.write_parquet(tmp, compression="zstd", row_group_size=_ROW_GROUP, statistics=True)
            durable_replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        crash_point("embedding_cache_part")  # a part not yet indexed: the next writer indexes it
        self._index_unlisted({name: out["text_hash"].to_list()})
        return path

    # ---- the index ------------------------------------------------------------------------------

    def _manifest(self) -> dict | None:
        try:
            manifest = json.loads((self.index_dir / "manifest.json").read_text())
        except FileNotFoundError:
            return None
        if manifest.get("format") != INDEX_FORMAT:
            raise ValueError(
                f"embedding cache index {self.index_dir} has format {manifest.get('format')!r}, this release reads "
                f"{INDEX_FORMAT}: remove the folder {self.index_dir} and it is rebuilt from the parts"
            )
        return manifest

    def _index_unlisted(self, known: dict[str, list[str]] | None = None) -> dict:
        """Index every part the manifest does not list yet (a new part, one a crash left unindexed, or every
        part of a cache written before the index), merge key files of a tier, commit the manifest; under
        the cache's lock. `known` gives the hashes of parts this process just wrote (else they are read)."""
        known = known or {}
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with writer_lock(self.index_dir, "embedding-cache", "index"):
            manifest = self._manifest() or {"format": INDEX_FORMAT, "parts": [], "indexes": []}
            listed = set(manifest["parts"])
            new = [name for name in self._part_names() if name not in listed]
            if new:
                columns = []
                for name in new:
                    hashes = known.get(name)
                    if hashes is None:
                        hashes = pl.read_parquet(self.dir / f"{name}.parquet", columns=["text_hash"])["text_hash"]
                        hashes = hashes.to_list()
                    part_no = len(manifest["parts"])
                    manifest["parts"].append(name)
                    columns.append(_key_columns(hashes, part_no))
                manifest["indexes"].append(self._write_keys(np.hstack(columns)))
                manifest["indexes"] = self._merge_tiers(manifest["indexes"])
                crash_point("embedding_cache_index")  # key files written, the manifest not yet
                atomic_write_text(self.index_dir / "manifest.json", json.dumps(manifest))
            self._remove_unlisted_keys(manifest)
        return manifest

    def _write_keys(self, columns: np.ndarray) -> dict:
        path = self.index_dir / f"keys-{uuid.uuid4().hex}.npy"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            keyfile.save(tmp, columns)
            durable_replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return {"file": path.name, "rows": int(columns.shape[1])}

    def _merge_tiers(self, indexes: list[dict]) -> list[dict]:
        """Merge MERGE_FANIN key files of one size tier into one, until no tier holds that many (files
        that would merge past MAX_MERGED_ROWS stay apart)."""
        while True:
            tiers: dict[int, list[int]] = {}
            for i, entry in enumerate(indexes):
                tiers.setdefault(_tier(entry["rows"]), []).append(i)
            # the smallest files of a tier merge first: a file at the cap never blocks its smaller tier-mates
            groups = (
                sorted(ids, key=lambda i: indexes[i]["rows"])[:MERGE_FANIN]
                for _, ids in sorted(tiers.items())
                if len(ids) >= MERGE_FANIN
            )
            group = next((g for g in groups if sum(indexes[i]["rows"] for i in g) <= MAX_MERGED_ROWS), None)
            if group is None:
                return indexes
            merged = np.hstack([np.asarray(keyfile.load(self.index_dir / indexes[i]["file"])) for i in group])
            entry = self._write_keys(merged)
            indexes = [e for i, e in enumerate(indexes) if i not in group] + [entry]

    def _remove_unlisted_keys(self, manifest: dict) -> None:
        """Key files no manifest names any more: replaced by a merge, or written before a crash."""
        listed = {e["file"] for e in manifest["indexes"]}
        for path in self.index_dir.glob("keys-*.npy"):
            if path.name not in listed:
                path.unlink(missing_ok=True)


def _tier(rows: int) -> int:
    tier = 0
    while rows >= _TIER_BASE_ROWS * MERGE_FANIN ** (tier + 1):
        tier += 1
    return tier


def _words(hashes: Sequence[str]) -> np.ndarray:
    """32-hex-digit hashes as their two 64-bit halves, (2, n)."""
    return np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=">u8").reshape(-1, 2).T.astype(np.uint64)


def _key_columns(hashes: Sequence[str], part_no: int) -> np.ndarray:
    n = len(hashes)
    return np.vstack([_words(hashes), np.full(n, part_no, np.uint64), np.arange(n, dtype=np.uint64)])


def _read_rows(path: Path, rows: np.ndarray, expected: list[str]) -> pl.DataFrame:
    """(text_hash, vector) of `rows` of the part at `path`, reading only the row groups that hold them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
    rg = np.searchsorted(starts, rows, side="right") - 1
    groups = np.unique(rg)
    table = pf.read_row_groups(groups.tolist(), columns=["text_hash", "vector"])
    # position of each row inside the concatenation of the groups read
    base = np.cumsum([0] + [int(starts[g + 1] - starts[g]) for g in groups[:-1]])
    local = base[np.searchsorted(groups, rg)] + (rows - starts[rg])
    got = pl.from_arrow(table.take(pa.array(local)))
    if got["text_hash"].to_list() != expected:
        raise RuntimeError(f"embedding cache part {path} does not hold what its index says: remove {path.parent}/index")
    return got
