"""Partitions: one per day of traffic."""

import os

import dagster as dg

# The embedded corpus is replayed over the days up to 2026-01-14; partitions start before that
# so every replayed day is addressable, and run up to yesterday for live traffic.
PARTITIONS_START = os.environ.get("FLYWHEEL_PARTITIONS_START", "2026-01-01")

daily = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
