"""Hugging Face model and dataset cards for what a generation writes, so the ecosystem reads them as they are.

A dataset folder gets its rows as Parquet shards under `data/` and a `README.md` whose YAML header names them
(`configs`), so `datasets.load_dataset(folder)`, `load_dataset("parquet", data_dir=folder / "data")` and TRL's
command line (`--dataset_name folder`) all read it. A model folder gets a `README.md` with its base model, the
content hashes of the data it was trained on and its metrics (in the header, machine-readable, and as a table).
Cards are built with `huggingface_hub`'s card classes, which the Hub and its tools parse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.lake import atomic_write_text

DATA_DIR = "data"
CARD_FILE = "README.md"
ROWS_PER_SHARD = 100_000
TAGS = ["characterflywheel"]


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics a card can show: numbers (finite), strings and booleans, nested keys joined by '/'."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out.update({f"{key}/{k}": v for k, v in _scalars(value).items()})
        elif isinstance(value, bool | str) or (isinstance(value, int | float) and math.isfinite(value)):
            out[key] = value
    return out


def _table(rows: Mapping[str, Any]) -> str:
    if not rows:
        return "_none recorded_"
    lines = ["| name | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def write_parquet_shards(dataset, out_dir: str | Path, rows_per_shard: int = ROWS_PER_SHARD) -> list[Path]:
    """`dataset` (a datasets.Dataset) as `data/train-0000k-of-0000n.parquet` under `out_dir`."""
    data = Path(out_dir) / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    n = max(1, math.ceil(len(dataset) / rows_per_shard))
    paths = []
    for k in range(n):
        path = data / f"train-{k:05d}-of-{n:05d}.parquet"
        dataset.shard(num_shards=n, index=k, contiguous=True).to_parquet(str(path))
        paths.append(path)
    return paths


def write_dataset_card(dataset, out_dir: str | Path, *, title: str, summary: str, manifest: Mapping[str, Any]) -> Path:
    """Parquet shards of `dataset` and a dataset card over them; `manifest` (content hash, rows, drop counts)
    goes into the card's header and body. The shards carry the features (datasets stores them in the Parquet
    metadata), so the card does not restate them."""
    from huggingface_hub import DatasetCard, DatasetCardData

    write_parquet_shards(dataset, out_dir)
    facts = _scalars(manifest) | {"rows": len(dataset), "columns": ", ".join(dataset.column_names)}
    data = DatasetCardData(
        pretty_name=title,
        tags=TAGS,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": f"{DATA_DIR}/train-*"}]}],
        content_hash=manifest.get("content_hash"),
    )
    body = (
        f'# {title}\n\n{summary}\n\nRead it with `datasets.load_dataset("parquet", data_dir="{DATA_DIR}")` '
        f"(from this folder) or pass this folder to TRL's `--dataset_name`.\n\n## Build\n\n{_table(facts)}\n"
    )
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    return atomic_write_text(Path(out_dir) / CARD_FILE, str(card))


def write_model_card(
    model_dir: str | Path,
    *,
    title: str,
    base_model: str | None,
    data_hashes: Mapping[str, str | None],
    metrics: Mapping[str, Any],
    library_name: str = "transformers",
    summary: str = "",
) -> Path:
    """A model card: the base model, the content hashes of the training data (name -> hash) and the metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    facts = _scalars(metrics)
    data = ModelCardData(
        base_model=base_model,
        library_name=library_name,
        tags=TAGS,
        training_data={k: v for k, v in data_hashes.items()},
        metrics_recorded=facts,
    )
    hashes = _table({k: f"`{v}`" if v else "—" for k, v in data_hashes.items()})
    body = (
        f"# {title}\n\n{summary}\n\n- base model: `{base_model or 'none (trained from scratch)'}`\n\n"
        f"## Training data (content hashes)\n\n{hashes}\n\n## Metrics\n\n{_table(facts)}\n"
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    return atomic_write_text(Path(model_dir) / CARD_FILE, str(card))
