from datetime import date

from pipeline.ingest import ingest_day
from pipeline.schema import UserHasher
from pipeline.source_config import SourceConfig
from pipeline.sources import available_days, read_day


def test_hf_dataset_from_disk(tmp_path):
    import datasets

    rows = {
        "messages": [
            [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "answer"}]
            for i in range(30)
        ]
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    cfg = SourceConfig(kind="hf_dataset", path=str(tmp_path / "ds"), end_date="2026-02-03", replay_days=3)
    days = available_days(cfg)
    assert days == [date(2026, 2, 1), date(2026, 2, 2), date(2026, 2, 3)]
    total = 0
    for d in days:
        res = ingest_day(read_day(cfg, d), d, hasher=UserHasher("t"))
        assert res.quarantine.is_empty(), res.quarantine
        total += res.conversations.height
    assert total == 60


def test_hf_dataset_with_timestamps_and_custom_column(tmp_path):
    import datasets

    rows = {
        "chat": [[{"role": "user", "content": "hi"}]] * 2,
        "timestamp": ["2026-05-01T08:00:00Z", "2026-05-02T09:00:00Z"],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    cfg = SourceConfig(kind="hf_dataset", path=str(tmp_path / "ds"), messages_column="chat")
    assert available_days(cfg) == [date(2026, 5, 1), date(2026, 5, 2)]
    res = ingest_day(read_day(cfg, date(2026, 5, 2)), date(2026, 5, 2), hasher=UserHasher("t"))
    assert res.conversations["text"].to_list() == ["hi"]
