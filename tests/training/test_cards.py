"""Dataset and model cards: the ecosystem's own readers open what the flywheel writes."""

import datasets
import polars as pl
from huggingface_hub import DatasetCard, ModelCard

from training.cards import write_dataset_card, write_model_card, write_parquet_shards
from training.policy.dataset_lineage import to_dataset


def _sft(n: int) -> datasets.Dataset:
    rows = [
        {
            "messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}],
            "source": "rejection_sampled",
            "prompt_id": f"p{i}",
        }
        for i in range(n)
    ]
    return to_dataset(rows, {"messages": "messages", "source": "string", "prompt_id": "string"})


def test_dataset_card_and_shards_load_as_they_are(tmp_path):
    ds = _sft(5)
    card = write_dataset_card(
        ds,
        tmp_path,
        title="sft set",
        summary="test rows",
        manifest={"content_hash": "abc123", "rows": 5, "drops": {"too_long": 2}},
    )
    parsed = DatasetCard.load(card)
    assert parsed.data.configs[0]["data_files"][0]["path"] == "data/train-*"
    assert parsed.data.to_dict()["content_hash"] == "abc123"
    assert "drops/too_long" in parsed.text
    by_dir = datasets.load_dataset("parquet", data_dir=str(tmp_path / "data"), split="train")
    by_card = datasets.load_dataset(str(tmp_path), split="train")
    for loaded in (by_dir, by_card):
        assert loaded.num_rows == 5
        assert loaded[0]["messages"] == ds[0]["messages"]
        assert loaded.features == ds.features


def test_shards_split_large_sets_and_keep_an_empty_one_readable(tmp_path):
    paths = write_parquet_shards(_sft(7), tmp_path / "big", rows_per_shard=3)
    assert [p.name for p in paths] == [f"train-0000{k}-of-00003.parquet" for k in range(3)]
    assert datasets.load_dataset("parquet", data_dir=str(tmp_path / "big" / "data"), split="train").num_rows == 7
    # datasets refuses to load a split of no rows; the empty shard still carries the columns
    (empty,) = write_parquet_shards(_sft(0), tmp_path / "empty")
    frame = pl.read_parquet(empty)
    assert frame.height == 0 and frame.columns == ["messages", "source", "prompt_id"]


def test_model_card_names_base_data_hashes_and_metrics(tmp_path):
    path = write_model_card(
        tmp_path,
        title="sft policy",
        base_model="models/gen-0/base",
        data_hashes={"dataset": "c0ffee"},
        metrics={"train_loss": 1.25, "steps": 30, "nan": float("nan"), "curve": [1, 2], "device": {"type": "cpu"}},
    )
    card = ModelCard.load(path)
    assert card.data.base_model == "models/gen-0/base"
    assert card.data.to_dict()["training_data"] == {"dataset": "c0ffee"}
    recorded = card.data.to_dict()["metrics_recorded"]
    assert recorded == {"train_loss": 1.25, "steps": 30, "device/type": "cpu"}
    assert "| train_loss | 1.25 |" in card.text
