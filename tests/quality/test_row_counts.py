from __future__ import annotations

import statistics
from datetime import date, timedelta

import pytest

from pipeline.lake import Lake
from quality.outcomes import WARNING
from quality.row_counts import row_count_band, row_count_history
from quality.suite_config import SuiteConfig
from quality.suites import validate_table

ROW_COUNT = "expect_table_row_count_to_be_between"


@pytest.fixture(scope="module")
def replay_messages() -> list[int]:
    """Messages per day of the default traffic: the Chit-Chat corpus replayed over 2026-01-01 .. 2026-01-14."""
    pytest.importorskip("chitchat_dataset")
    from pipeline.sources import SourceConfig, available_days, read_day

    cfg = SourceConfig()
    return [sum(len(r.value["messages"]) for r in read_day(cfg, d)) for d in available_days(cfg)]


def _inside(count: int, band: tuple[int, int] | None) -> bool:
    return band is None or band[0] <= count <= band[1]


def test_every_replayed_day_of_the_default_traffic_is_inside_its_band_wherever_the_history_starts(replay_messages):
    assert len(replay_messages) == 14
    cfg = SuiteConfig()
    for start in range(len(replay_messages)):  # a flywheel's history starts on its first window's first day
        days = replay_messages[start:]
        history = lambda i, days=days: days[max(0, i - cfg.row_history_days) : i]  # noqa: E731
        outside = [start + i for i, n in enumerate(days) if not _inside(n, row_count_band(history(i), cfg))]
        assert outside == [], f"history from day {start}"


def test_a_collapsed_day_of_the_default_traffic_is_outside_its_band(replay_messages):
    for i in (4, 7, 13):
        low, _ = row_count_band(replay_messages[:i])
        assert replay_messages[i] >= low
        assert replay_messages[i] // 20 < low  # a twentieth of the day's traffic


def test_no_band_until_the_history_has_enough_days_then_the_floor_around_the_median():
    assert row_count_band([]) is None
    assert row_count_band([0, 0, 0]) is None  # only empty days: nothing to judge by
    assert row_count_band([100]) is None and row_count_band([100, 400]) is None  # too few days to judge by
    low, high = row_count_band([100, 400], SuiteConfig(row_history_min_days=2))
    assert low < 40 and high > 1000  # the floor around the geometric mean (40..1000), widened by their spread
    steady = [1000, 1010, 990, 1000, 1005]
    assert row_count_band(steady) == (200, 5000)
    assert row_count_band(steady, SuiteConfig(row_band_ratio=2.0)) == (500, 2000)
    # an uneven history widens the band beyond the floor
    uneven = [1000, 3000, 400, 2500, 600, 5000, 300]
    low, high = row_count_band(uneven)
    assert low < statistics.median(uneven) / 5 and high > statistics.median(uneven) * 5
    # ... and with fewer than row_history_min_days days there is none
    assert row_count_band(uneven[:2]) is None
    with pytest.raises(ValueError, match="row count"):
        row_count_band([10, -1])


def test_bad_band_settings_name_the_setting():
    with pytest.raises(ValueError, match="row_band_ratio"):
        SuiteConfig(row_band_ratio=0.5)
    with pytest.raises(ValueError, match="row_history_days"):
        SuiteConfig(row_history_days=-1)


def test_history_is_the_latest_earlier_partitions_oldest_first(tmp_path, make):
    lake = Lake(tmp_path)
    start = date(2026, 1, 1)
    for i, n in enumerate((3, 5, 4, 6)):
        lake.write("conversations", start + timedelta(days=i), make.conversations(n_conv=n, turns=2))
    today = start + timedelta(days=3)
    assert row_count_history(lake, "conversations", today) == [6, 10, 8]
    assert row_count_history(lake, "conversations", today, SuiteConfig(row_history_days=2)) == [10, 8]
    assert row_count_history(lake, "conversations", start) == []
    assert row_count_history(lake, "conversations", today, SuiteConfig(row_history_days=0)) == []


@pytest.mark.usefixtures("gx_runtime")
def test_suite_warns_on_a_collapsed_day_and_not_on_an_uneven_one(tmp_path, make):
    lake = Lake(tmp_path)
    start = date(2026, 1, 1)
    for i, n in enumerate((12, 30, 8, 20, 16)):
        lake.write("conversations", start + timedelta(days=i), make.conversations(n_conv=n))
    today = start + timedelta(days=5)
    history = row_count_history(lake, "conversations", today)
    assert history == [72, 180, 48, 120, 96]
    # three times the smallest day and a third of the largest: uneven, not broken
    for n_conv in (30, 8):
        result = validate_table("conversations", make.conversations(n_conv=n_conv), row_history=history)
        assert result.all_passed, result.to_markdown()
    collapsed = validate_table("conversations", make.conversations(n_conv=1), row_history=history)
    assert collapsed.success and not collapsed.all_passed  # a warning, it does not block
    [band] = collapsed.failed
    assert band.name == ROW_COUNT and band.severity == WARNING and band.observed == 6
    assert band.description == "row count near the usual of the 5 previous days (48..180 rows)"
    # quarantine's row count is the day's rejects, not its traffic: no band
    quarantine = validate_table("quarantine", make.quarantine(), row_history=[500, 800, 900])
    assert quarantine.all_passed
