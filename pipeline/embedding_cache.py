"""The embedding cache: every vector in the lake, keyed by (text hash, model id).

The model id names the backend too, so vectors of different backends never mix.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.durable import durable_replace
from pipeline.embed_config import slug

_EMPTY_HITS = pl.DataFrame(schema={"text_hash": pl.Utf8})
_ROW_GROUP = 4096  # small row groups: a lookup reads vectors only from the groups that hold hits


class EmbeddingCache:
    """Vectors of one model id in Parquet parts under ``<root>/model=<slug>/``.

    Each `add` writes a new part (temp file + rename) and never rewrites one, so writers of
    different days can run at once. A text embedded by two concurrent writers is stored twice and
    read once. Lookups scan only the hash column (DuckDB), then read the vectors of the row groups
    that hold hits.
    """

    def __init__(self, root: Path | str, model_id: str):
        self.root = Path(root)
        self.model_id = model_id
        self.dir = self.root / f"model={slug(model_id)}"

    def files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.parquet") if not p.name.startswith("."))

    def count(self) -> int:
        """Rows stored (duplicates from concurrent writers included)."""
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files())

    def lookup(self, hashes: Sequence[str]) -> pl.DataFrame:
        """The stored (text_hash, vector) of those of `hashes` that are cached, one row per hash."""
        import duckdb
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.files()
        wanted = list(dict.fromkeys(hashes))
        if not files or not wanted:
            return _EMPTY_HITS.clear()
        con = duckdb.connect(":memory:")
        try:
            con.register("wanted", pa.table({"h": pa.array(wanted, pa.string())}))
            hits = con.sql(
                "SELECT filename, file_row_number AS row, text_hash FROM read_parquet($files, filename = true, "
                "file_row_number = true) WHERE text_hash IN (SELECT h FROM wanted)",
                params={"files": [str(f) for f in files]},
            ).pl()
        finally:
            con.close()
        hits = hits.unique("text_hash", keep="first", maintain_order=True)
        parts: list[pl.DataFrame] = []
        for (fname,), grp in hits.group_by("filename", maintain_order=True):
            pf = pq.ParquetFile(fname)
            starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
            rows = grp["row"].to_numpy()
            rg = np.searchsorted(starts, rows, side="right") - 1
            groups = np.unique(rg)
            table = pf.read_row_groups(groups.tolist(), columns=["text_hash", "vector"])
            # position of each hit inside the concatenation of the groups read
            base = np.cumsum([0] + [int(starts[g + 1] - starts[g]) for g in groups[:-1]])
            local = base[np.searchsorted(groups, rg)] + (rows - starts[rg])
            got = pl.from_arrow(table.take(pa.array(local)))
            if got["text_hash"].to_list() != grp["text_hash"].to_list():
                raise RuntimeError(f"embedding cache part {fname} changed while it was read")
            parts.append(got)
        return pl.concat(parts) if parts else _EMPTY_HITS.clear()

    def add(self, frame: pl.DataFrame, part: str | None = None) -> Path | None:
        """Store (text_hash, vector) rows as a new part; returns its path (None when `frame` is empty)."""
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
        name = part or f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        if not re.match(r"^[A-Za-z0-9_\-]+$", name):
            raise ValueError(f"bad embedding cache part name {name!r}")
        path = self.dir / f"{name}.parquet"
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp-{uuid.uuid4().hex}"
        try:
            out.write_parquet(tmp, compression="zstd", row_group_size=_ROW_GROUP, statistics=True)
            durable_replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
