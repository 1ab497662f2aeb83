from datetime import date

import pytest

from pipeline.folder_scan import scan_day
from pipeline.source_config import SourceConfig, SourceConfigError
from pipeline.sources import available_days


def test_folder_day_detection(tmp_path):
    (tmp_path / "2026-01-02.jsonl").write_text("{}\n")
    (tmp_path / "traffic-2026-01-03.parquet").write_bytes(b"")
    (tmp_path / "day=2026-01-04").mkdir()
    (tmp_path / "day=2026-01-04" / "a.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("ignored")
    cfg = SourceConfig(kind="folder", path=str(tmp_path))
    assert available_days(cfg) == [date(2026, 1, 2), date(2026, 1, 3), date(2026, 1, 4)]
    assert [p.name for p in scan_day(tmp_path, date(2026, 1, 4)).files] == ["a.jsonl"]
    assert scan_day(tmp_path, date(2026, 1, 9)).files == []


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"kind": "s3"}, "kind"),
        ({"end_date": "14/01/2026"}, "end_date"),
        ({"kind": "folder"}, "path"),
        ({"kind": "folder", "path": "/no/such/folder"}, "path"),
        ({"kind": "hf_dataset", "path": "some-org/some-set"}, "allow_hub"),
        ({"replay_days": 0}, "replay_days"),
        ({"internal_user_fraction": 1.5}, "internal_user_fraction"),
    ],
)
def test_bad_settings_fail_fast_naming_the_setting(kwargs, setting):
    with pytest.raises(SourceConfigError, match=setting):
        SourceConfig(**kwargs)
