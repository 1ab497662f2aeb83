"""What a dataset builder hands back and records: kept rows, drop accounting and a content-hashed manifest.

A generation's lineage names its datasets by content hash, so the same inputs always give the same hash and
a changed row changes it; drop counts by reason let a report account for every input row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from training.cards import write_dataset_card

CARD_SUMMARIES = {
    "sft": "Supervised fine-tuning conversations (`messages`, TRL's conversational format): the best candidate "
    "reply per prompt, engaged served replies and rewrites, each with its `source`.",
    "preference": "Preference pairs (`prompt`, `chosen`, `rejected`, TRL's conversational preference format) "
    "from reward-ranked candidates and annotations, after the length and emoji artifact filters.",
    "rl_pool": "Near-policy RL prompts (`prompt` messages) whose candidates earn a low mean or a widely spread "
    "reward, for online RL (GRPO).",
}


@dataclass
class BuildResult:
    dataset: Any  # datasets.Dataset of the kept rows, in TRL's conversational format
    frame: pl.DataFrame  # the rows as polars (for preferences: dropped pairs too, with their drop_reason)
    drops: pl.DataFrame  # schema.DROPS
    manifest: dict[str, Any]

    def save(self, out_dir: str | Path) -> Path:
        """Write `dataset/` (datasets' save_to_disk), `manifest.json`, `rows.parquet`, `drops.parquet`, and the
        kept rows again as Parquet shards under `data/` with a dataset card (`README.md`) over them."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # An empty dataset saved without a shard cannot be loaded back, so it gets one (empty) shard.
        self.dataset.save_to_disk(str(out / "dataset"), num_shards=1 if len(self.dataset) == 0 else None)
        self.frame.write_parquet(out / "rows.parquet")
        self.drops.write_parquet(out / "drops.parquet")
        (out / "manifest.json").write_text(json.dumps(self.manifest, indent=2, default=str))
        kind = str(self.manifest.get("kind", "dataset"))
        write_dataset_card(
            self.dataset,
            out,
            title=f"CharacterFlywheel {kind} set",
            summary=CARD_SUMMARIES.get(kind, ""),
            manifest=self.manifest,
        )
        return out


def split_filter(prompts: pl.DataFrame, train_splits: tuple[str, ...]) -> tuple[pl.DataFrame, list[dict]]:
    """Keep training-split prompts: evaluation prompts must never be trained on (the overlap gate checks it).

    Prompts without a `split` column (before the split stage ran) are all kept.
    """
    if "split" not in prompts.columns or not train_splits:
        return prompts, []
    keep = pl.col("split").is_in(list(train_splits)).fill_null(False)
    dropped = [
        {"day": r["day"], "row_id": r["prompt_id"], "reason_code": "not_train_split", "detail": f"split={r['split']}"}
        for r in prompts.filter(~keep).select("day", "prompt_id", "split").iter_rows(named=True)
    ]
    return prompts.filter(keep), dropped


def counts_by_reason(drops: pl.DataFrame) -> dict[str, int]:
    """`stage/reason_code -> rows`, the figure a report shows per step."""
    if drops.is_empty():
        return {}
    grouped = drops.group_by("stage", "reason_code").len().sort("stage", "reason_code")
    return {f"{r['stage']}/{r['reason_code']}": int(r["len"]) for r in grouped.iter_rows(named=True)}


def messages_feature():
    import datasets

    return [{"role": datasets.Value("string"), "content": datasets.Value("string")}]


def to_dataset(rows: list[dict], columns: dict[str, Any]):
    """A datasets.Dataset with explicit features, so an empty build still has the right columns."""
    import datasets

    features = {
        name: (messages_feature() if kind == "messages" else datasets.Value(kind)) for name, kind in columns.items()
    }
    data = {name: [r[name] for r in rows] for name in columns}
    return datasets.Dataset.from_dict(data, features=datasets.Features(features))
