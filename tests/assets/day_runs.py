"""Runs of the daily chain of one day, in process or in a subprocess, and the bytes they leave behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from assets.curation import (
    CurationSettings,
    deduped_prompts,
    prompt_embeddings,
    scrubbed_conversations,
    static_prompts,
    unique_prompts,
)
from assets.ingest import ingest
from assets.resources import FlywheelSettings
from tests.assets.traffic import DAY

REPO = Path(__file__).resolve().parents[2]


def resources(home: Path, src: Path) -> dict:
    return {
        "settings": FlywheelSettings(home=str(home), source_kind="folder", source_path=str(src)),
        "curation": CurationSettings(history_start=DAY),
    }


def snapshot(home: Path, records_by_identity: bool = False) -> dict[str, bytes]:
    """Every file of the lake and the cross-day state. The embedding cache is compared by content (its parts
    are named per write, and vectors a killed run cached are the same vectors); with `records_by_identity`,
    a step's record by what it identifies (its fingerprint and data versions: the metadata of ingest and
    of the embedding step holds timings)."""
    out = {}
    for top in ("lake", "state"):
        for p in sorted((home / top).rglob("*")):
            rel = p.relative_to(home)
            if not p.is_file() or "embeddings" in rel.parts:
                continue
            if records_by_identity and rel.parts[:2] == ("state", "steps"):
                record = json.loads(p.read_text())
                versions = [m["data_version"] for m in record["materializations"]]
                out[str(rel)] = json.dumps([record["fingerprint"], versions]).encode()
            else:
                out[str(rel)] = p.read_bytes()
    cache = sorted((home / "lake" / "embeddings").rglob("*.parquet"))
    if cache:
        vectors = pl.concat([pl.read_parquet(p) for p in cache]).unique("text_hash").sort("text_hash")
        out["lake/embeddings"] = vectors.write_ipc(None).getvalue()
    return out


CHAIN = """
import sys
import dagster as dg
from assets import curation
from assets.ingest import ingest
from assets.resources import FlywheelSettings
home, src, day, first, *names = sys.argv[1:]
settings = FlywheelSettings(home=home, source_kind="folder", source_path=src)
assets = [ingest if n == "ingest" else getattr(curation, n) for n in names]
resources = {"settings": settings, "curation": curation.CurationSettings(history_start=first)}
assert dg.materialize(assets, partition_key=day, resources=resources).success
"""

DAY_CHAIN = [ingest, scrubbed_conversations, static_prompts, deduped_prompts, prompt_embeddings, unique_prompts]


def start_chain(home: Path, src: Path, day: str, env: dict | None = None) -> subprocess.Popen:
    """`DAY_CHAIN` of `day` materialized by another process (history from `DAY`); stderr is piped."""
    names = [a.key.to_user_string() if a is not ingest else "ingest" for a in DAY_CHAIN]
    return subprocess.Popen(
        [sys.executable, "-c", CHAIN, str(home), str(src), day, DAY, *names],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
