"""Partitions: one per day of traffic."""

import os
import warnings

import dagster as dg

# The embedded corpus is replayed over the days up to 2026-01-14; partitions start before that
# so every replayed day is addressable, and run up to yesterday for live traffic.
PARTITIONS_START = os.environ.get("FLYWHEEL_PARTITIONS_START", "2026-01-01")

daily = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

# A cross-day step of day D builds on its own partition of day D - 1. As a dependency, this makes
# Dagster run a backfill's days of the step in order (two partitions never race on the history);
# the first partition has no previous day, which is allowed.
# The option is beta in Dagster 1.13; the order and refusal tests pin the behaviour this code relies on,
# so its warning is kept off the terminal.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    PREVIOUS_DAY = dg.TimeWindowPartitionMapping(
        start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
    )
