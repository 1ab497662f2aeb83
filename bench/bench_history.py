"""Does a cross-day step cost the same after 10x more history? Day N+1 after N days vs after 10 N days.

The embedded corpus's replayed days (static prompts, `--rows` per day) are replayed again and again
with shifted ids and dates, each replay with its letters rotated (a Caesar shift: the same lengths
and the same within-day duplicates, but no text, shingle or hash in common with another replay) and
its vectors rotated by a random orthogonal matrix (the same within-day cosines, unrelated across
replays). Vectors are hashed character 3-grams of each prompt's ending, projected to `--dim`:
a stand-in for a sentence embedding that keeps near-identical texts together, so the benchmark
needs no model.

Two histories are built, of N and of `--factor` x N days, through the real steps (exact, near and
semantic dedup with their day chains, and the embedding cache: the day's distinct texts looked up, the
missing ones added as a part, as the embedding step does). Then day N+1 of each is run `--repeat`
times, each in a fresh process on a fresh copy of the history, the two days taking turns (so a load
that changes while the benchmark runs slows both alike), which reports the wall time of the steps and
its peak memory (the whole process, and above what the process held before the steps), and the
embedding cache's own time and the process's peak memory while it runs (the kernel's peak is reset
when it starts), with how far that is above the memory it started with. Printed: the medians and
their ratios (target: at most 1.2 each).

    python bench/bench_history.py [--rows 2000] [--factor 10] [--days 14] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.dedup_exact import ExactDedupConfig, exact_dedup  # noqa: E402
from pipeline.dedup_near import NearDedupConfig, near_dedup  # noqa: E402
from pipeline.embedding_cache import EmbeddingCache  # noqa: E402
from pipeline.history import DayChain  # noqa: E402
from pipeline.semdedup import SemDedupConfig, history_kind, semantic_dedup, unit_rows  # noqa: E402
from pipeline.text_hash import raw_text_hashes  # noqa: E402

FIRST = date(2030, 1, 1)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_day(root: Path, frame: pl.DataFrame, vectors: np.ndarray, cache_probe: dict | None = None) -> dict:
    """Exact, near and semantic dedup of one day against the histories under `root`, and the embedding
    cache of the texts that reach semantic dedup; `cache_probe` gets the cache's own time and memory."""
    day = frame["day"][0]
    near_cfg = NearDedupConfig()
    exact = exact_dedup(frame, history=DayChain(root / "exact", FIRST, ExactDedupConfig().history_kind()))
    near = near_dedup(exact.kept, near_cfg, history=DayChain(root / "near", FIRST, near_cfg.history_kind()))
    keep = frame.select("prompt_id").with_row_index("_i").join(near.kept.select("prompt_id"), on="prompt_id")
    cached = embedding_cache_step(root, near.kept["text"].to_list(), vectors[keep["_i"].to_numpy()], cache_probe)
    sem = semantic_dedup(
        keep["prompt_id"],
        vectors[keep["_i"].to_numpy()],
        SemDedupConfig(),
        day=day,
        history=DayChain(root / "semantic", FIRST, history_kind(vectors.shape[1])),
    )
    return {
        "rows": frame.height,
        "kept": sem.kept.height,
        "history_days": exact.counters.history_days,
        "cache_hits": cached,
    }


def embedding_cache_step(root: Path, texts: list[str], vectors: np.ndarray, probe: dict | None) -> int:
    """What the embedding step does with the cache: look the day's distinct texts up, add the missing
    ones as one part. Returns the hits; with `probe`, records its seconds and peak memory above the
    process's memory when it started (the kernel's peak is reset first)."""
    if probe is not None:
        probe["peak_before_cache_mb"] = _status_mb("VmHWM")
        _reset_peak()
        before = _status_mb("VmRSS")
        t0 = time.perf_counter()
    cache = EmbeddingCache(root / "embeddings", "bench|hashed-3grams")
    hashes = raw_text_hashes(texts)
    first = dict(zip(reversed(hashes), reversed(range(len(hashes)))))  # each distinct text's first row
    found = set(cache.lookup(list(first))["text_hash"].to_list())
    missing = [h for h in first if h not in found]
    vector = pl.Series(vectors[[first[h] for h in missing]], dtype=pl.Array(pl.Float32, vectors.shape[1]))
    cache.add(pl.DataFrame({"text_hash": missing, "vector": vector}))
    if probe is not None:
        probe["cache_seconds"] = time.perf_counter() - t0
        probe["cache_peak_mb"] = _status_mb("VmHWM")
        probe["cache_growth_mb"] = _status_mb("VmHWM") - before
    return len(found)


def _reset_peak() -> None:
    """Set the process's peak resident memory (VmHWM) to what it holds now (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _hashed_vectors(texts: list[str], dim: int) -> np.ndarray:
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        t = (t or "")[-160:].lower()
        grams = [zlib.crc32(t[j : j + 3].encode()) % dim for j in range(max(1, len(t) - 2))]
        np.add.at(out[i], grams, 1.0)
    return unit_rows(out)


def _caesar(k: int) -> dict[int, int]:
    table = {}
    for a, z in (("a", "z"), ("A", "Z")):
        for c in range(ord(a), ord(z) + 1):
            table[c] = ord(a) + (c - ord(a) + k) % 26
    return table


def base_days(n_days: int, rows: int, dim: int) -> list[tuple[pl.DataFrame, np.ndarray]]:
    from pipeline.ingest import ingest_day
    from pipeline.prompts import PromptConfig, cut_prompts
    from pipeline.source_config import SourceConfig
    from pipeline.sources import read_day

    cfg = SourceConfig()
    out = []
    for d in cfg.replay_days_list()[-n_days:]:
        prompts, _ = cut_prompts(ingest_day(read_day(cfg, d), d).conversations, PromptConfig()).frames
        frame = prompts.sort("prompt_id").head(rows).select("prompt_id", "conversation_id", "text")
        out.append((frame, _hashed_vectors(frame["text"].to_list(), dim)))
    return out


def replayed(base: list, index: int, dim: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Day `index` (0-based) of the endless replay: base day index % N, replay index // N."""
    frame, vectors = base[index % len(base)]
    k = index // len(base)
    day = FIRST + timedelta(days=index)
    table = _caesar(k)
    shifted = frame.with_columns(
        prompt_id=pl.lit(f"r{k}-") + pl.col("prompt_id"),
        conversation_id=pl.lit(f"r{k}-") + pl.col("conversation_id"),
        text=pl.col("text").map_elements(lambda t: t.translate(table), return_dtype=pl.Utf8),
        day=pl.lit(day),
    )
    q, _ = np.linalg.qr(np.random.default_rng(k).standard_normal((dim, dim)))
    return shifted, unit_rows(vectors @ q.astype(np.float32) if k else vectors)


def measure(cases: list[tuple[Path, pl.DataFrame, np.ndarray]], repeat: int) -> list[dict]:
    """Run each case's day `repeat` times, each in a fresh process on a fresh copy of its history, the
    cases taking turns (a load that changes during the benchmark then slows them alike); per case, the
    median time and peak memory (a loaded machine slows single runs at random)."""
    runs: list[list[dict]] = [[] for _ in cases]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for c, (_, frame, vectors) in enumerate(cases):
            paths.append(Path(tmp) / f"day-{c}.parquet")
            vector = pl.Series(vectors, dtype=pl.Array(pl.Float32, vectors.shape[1]))
            frame.with_columns(vector=vector).write_parquet(paths[-1])
        for i in range(repeat):
            for c, (root, _, _) in enumerate(cases):
                probe = Path(tmp) / f"history-{c}-{i}"
                shutil.copytree(root, probe)
                # the copy's dirty pages go to disk now: else the day's first fsync (a commit's) waits for
                # them, and the larger history's copy would make the day look slower
                os.sync()
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", str(probe), str(paths[c])],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                    check=True,
                )
                runs[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
                shutil.rmtree(probe, ignore_errors=True)
    results = []
    for case in runs:
        keys = ("seconds", "peak_mb", "step_peak_mb", "cache_seconds", "cache_peak_mb", "cache_growth_mb")
        median = {k: float(np.median([r[k] for r in case])) for k in keys}
        spread = {f"all_{k}": [round(r[k], 3) for r in case] for k in ("seconds", "cache_seconds")}
        results.append({**case[0], **median, **spread})
    return results


def _measure_child(root: str, path: str) -> None:
    frame = pl.read_parquet(path)
    vectors = frame["vector"].to_numpy().astype(np.float32)
    frame = frame.drop("vector")
    import duckdb  # noqa: F401  (imports are the process's baseline, not the step's)
    import faiss  # noqa: F401
    import pyarrow.parquet  # noqa: F401  (the embedding cache reads with it)

    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    cache_probe: dict = {}
    # the cache's probe resets the kernel's peak: the process's peak is the larger of the two sides of it
    result = run_day(Path(root), frame, vectors, cache_probe)
    seconds = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over a fork and exec, so a child's figure would
    # include the RSS of the parent that built the history (and grew with it)
    peak = max(_status_mb("VmHWM"), cache_probe.pop("peak_before_cache_mb"))
    print(json.dumps({**result, **cache_probe, "seconds": seconds, "peak_mb": peak, "step_peak_mb": peak - before}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=14, help="N: replayed days of the short history")
    parser.add_argument("--factor", type=int, default=10, help="the long history holds factor x N days")
    parser.add_argument("--rows", type=int, default=2000, help="prompts per day")
    parser.add_argument("--dim", type=int, default=384, help="vector dimension")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measured day (the median is reported)")
    parser.add_argument("--measure", nargs=2, metavar=("ROOT", "DAY_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure_child(*args.measure)
        return 0
    base = base_days(args.days, args.rows, args.dim)
    root = Path(tempfile.mkdtemp(prefix="flywheel-history-"))
    try:
        t0 = time.perf_counter()
        n_long = args.days * args.factor
        short_root = root.with_name(root.name + f"-{args.days}")
        for i in range(n_long):
            if i == args.days:  # the history of day N+1, kept aside while the long one grows
                shutil.copytree(root, short_root)
            run_day(root, *replayed(base, i, args.dim))
            if i % args.days == args.days - 1:
                print(f"  history of {i + 1} days built ({time.perf_counter() - t0:.0f}s)", flush=True)
        short, long_ = measure(
            [(short_root, *replayed(base, args.days, args.dim)), (root, *replayed(base, n_long, args.dim))],
            args.repeat,
        )
        print(f"day {args.days + 1} after {args.days} days of history: {short}", flush=True)
        print(f"day {n_long + 1} after {n_long} days of history: {long_}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(root.with_name(root.name + f"-{args.days}"), ignore_errors=True)
    print(f"\nrows per day {args.rows}, history {args.days} vs {n_long} days (cpu count {os.cpu_count()})")
    print(
        f"time         {short['seconds']:.2f}s vs {long_['seconds']:.2f}s  ratio {long_['seconds'] / short['seconds']:.2f}"
    )
    print(
        f"peak memory  {short['peak_mb']:.0f} MB vs {long_['peak_mb']:.0f} MB  ratio {long_['peak_mb'] / short['peak_mb']:.2f}"
    )
    print(
        f"step memory  {short['step_peak_mb']:.0f} MB vs {long_['step_peak_mb']:.0f} MB above the process baseline  "
        f"ratio {long_['step_peak_mb'] / max(short['step_peak_mb'], 1):.2f}"
    )
    print(
        f"embedding cache  {short['cache_seconds']:.3f}s vs {long_['cache_seconds']:.3f}s  ratio "
        f"{long_['cache_seconds'] / short['cache_seconds']:.2f};  peak memory while it runs "
        f"{short['cache_peak_mb']:.0f} MB vs {long_['cache_peak_mb']:.0f} MB  ratio "
        f"{long_['cache_peak_mb'] / short['cache_peak_mb']:.2f} ({short['cache_growth_mb']:.1f} MB vs "
        f"{long_['cache_growth_mb']:.1f} MB above its start)"
    )
    print("targets: time and peak memory ratios <= 1.2 (the steps, and the embedding cache alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
