"""A day of any size: a synthetic day of `--scale` x a default day, consolidated at N = 1 and N = 2 shards.

The day is built from the embedded Chit-Chat corpus: its conversations are copied `--scale` times (the fraction
of a copy for a scale below one) with new conversation and user ids, and each message of a copy is left as it
is, loses one word, or has one word swapped for another word of the corpus, so exact, near and semantic dedup
all have work. It lands as `--files` files of a folder source.

Each N runs the whole consolidation job of that day in a fresh FLYWHEEL_HOME through Dagster's multiprocess
executor, N workers (`max_concurrent`) and N shards, one encoder thread per worker (`worker_threads` = 1), the
two runs started from this one process one after the other. Printed: each step's seconds and messages/s per
worker, the peak memory per worker (the largest step process), whether the two lakes are identical, then the parallel
efficiency, messages/s at N = 2 over N = 1 (a perfect split of the work over two workers gives 2.00).

    python bench/bench_scale.py [--scale 10] [--files 8] [--shards 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.source_chitchat import chitchat_path, load_json_corpus  # noqa: E402
from pipeline.source_config import SourceConfig  # noqa: E402

DAY = "2026-01-10"
# the default replayed day of the measurements (2026-01-10): 32,664 messages
DEFAULT_DAY_MESSAGES = 32_664


def _vary(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split()
    roll = rng.random()
    if len(words) < 3 or roll < 0.4:
        return text  # an exact copy
    i = rng.randrange(len(words))
    if roll < 0.7:
        return " ".join(words[:i] + words[i + 1 :])  # one word fewer: near duplicates
    return " ".join(words[:i] + [rng.choice(vocabulary)] + words[i + 1 :])  # one word swapped


def build_day(folder: Path, scale: float, files: int, seed: int = 0) -> int:
    """The synthetic day's messages as `files` JSONL files; returns how many messages it holds."""
    corpus = [c for c in load_json_corpus(str(chitchat_path(SourceConfig()))).values() if c["messages"]]
    per_copy = []
    total = 0
    for conv in corpus:
        msgs = [m for turn in conv["messages"] for m in turn]
        per_copy.append(msgs)
        total += len(msgs)
        if total >= DEFAULT_DAY_MESSAGES:
            break
    vocabulary = sorted({w for msgs in per_copy for m in msgs for w in m["text"].split()})[:50_000]
    rng = random.Random(seed)
    target = int(round(scale * total))
    outs = [open(folder / f"part-{f}.jsonl", "w") for f in range(files)]  # noqa: SIM115
    written, copy = 0, 0
    try:
        while written < target:
            for c, msgs in enumerate(per_copy):
                if written >= target:
                    break
                first = msgs[0]["sender"]
                cid = f"conv-{copy}-{c}"
                out = outs[zlib.crc32(cid.encode()) % files]
                for i, m in enumerate(msgs):
                    text = m["text"] if copy == 0 else _vary(m["text"], rng, vocabulary)
                    row = {
                        "conversation_id": cid,
                        "turn_index": i,
                        "text": text,
                        "role": "user" if m["sender"] == first else "assistant",
                        "user_id": f"user-{copy}-{c % 400}",
                        "ts": f"{DAY}T{(c % 24):02d}:{(i % 60):02d}:00Z",
                    }
                    out.write(json.dumps(row) + "\n")
                written += len(msgs)
            copy += 1
    finally:
        for out in outs:
            out.close()
    return written


def consolidation_job() -> dg.JobDefinition:
    from assets.definitions import defs
    from assets.executors import consolidation_executor

    return defs.resolve_job_def("consolidation").with_executor_def(consolidation_executor())


class PeakMemory:
    """The largest peak resident set (VmHWM) of any process under this one while it runs: each step of a
    multiprocess run is a process, forked by Dagster's forkserver, so this is the peak memory per worker."""

    def __init__(self, every_s: float = 0.2):
        import psutil  # a dependency of Dagster's

        self._psutil, self._every_s = psutil, every_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        me = self._psutil.Process()
        while not self._stop.wait(self._every_s):
            for child in me.children(recursive=True):
                try:
                    status = Path(f"/proc/{child.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(home: Path, source: Path, shards: int) -> dict:
    """The consolidation of the day at `shards` shards and as many workers; step seconds and the peak memory."""
    os.environ["FLYWHEEL_WORKERS"] = str(shards)
    run_config = {
        "resources": {
            "settings": {"config": {"home": str(home), "source_kind": "folder", "source_path": str(source)}},
            "curation": {"config": {"history_start": DAY, "shards": shards, "workers": shards, "worker_threads": 1}},
        }
    }
    started = time.perf_counter()
    with PeakMemory() as memory, dg.instance_for_test() as instance:
        with dg.execute_job(
            dg.reconstructable(consolidation_job), instance, run_config=run_config, tags={"dagster/partition": DAY}
        ) as result:
            ok = result.success
            begun, steps = {}, {}
            for entry in instance.all_logs(result.run_id):
                event = entry.dagster_event
                if event is not None and event.event_type_value == "STEP_START":
                    begun[event.step_key] = entry.timestamp
                elif event is not None and event.event_type_value == "STEP_SUCCESS":
                    steps[event.step_key] = entry.timestamp - begun[event.step_key]
    wall = time.perf_counter() - started
    return {"ok": ok, "wall_s": wall, "steps": steps, "peak_mb": memory.peak_mb}


def lake_files(home: Path) -> dict[str, bytes]:
    """The lake and the cross-day state by content (embedding cache parts are named per write: by vector)."""
    import polars as pl

    out = {}
    for top in ("lake", "state"):
        for p in sorted((home / top).rglob("*.parquet")):
            rel = str(p.relative_to(home))
            if "embeddings" in rel.split(os.sep) or "ingest_stats" in rel:
                continue
            out[rel] = p.read_bytes()
    cache = sorted((home / "lake" / "embeddings").rglob("*.parquet"))
    if cache:
        frame = pl.concat([pl.read_parquet(p) for p in cache]).unique("text_hash").sort("text_hash")
        out["lake/embeddings"] = frame.write_ipc(None).getvalue()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0, help="the day's size in default days (10, 100, 0.25)")
    parser.add_argument("--files", type=int, default=8, help="files the day arrives in")
    parser.add_argument("--shards", type=int, nargs=2, default=[1, 2], help="the two shard counts compared")
    parser.add_argument("--keep", default=None, help="build the homes under this folder and keep them")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-scale-"))
    source = root / "source" / f"day={DAY}"
    source.mkdir(parents=True, exist_ok=True)
    messages = build_day(source, args.scale, args.files)
    print(
        f"synthetic day: {messages:,} messages ({args.scale}x a default day) in {args.files} files; load {os.getloadavg()[0]:.2f}"
    )
    results, lakes = {}, {}
    for n in args.shards:
        home = root / f"home-n{n}"
        res = run(home, source.parent, n)
        if not res["ok"]:
            print(f"N={n}: the consolidation failed")
            return 1
        results[n], lakes[n] = res, lake_files(home)
        print(
            f"\nN={n} (W={n}, 1 thread per worker): {res['wall_s']:.1f}s, {messages / res['wall_s']:.0f} messages/s, "
            f"peak memory per worker {res['peak_mb']:.0f} MB, load {os.getloadavg()[0]:.2f}"
        )
        for step, seconds in sorted(res["steps"].items(), key=lambda kv: -kv[1]):
            # a shard step works on its share of the day; every other step on the whole day, in one worker
            share = messages / n if "[shard_" in step else messages
            print(f"  {step:48s} {seconds:7.1f}s  {share / seconds:9.0f} messages/s per worker")
        print(f"  steps {sum(res['steps'].values()):.1f}s of worker time in {res['wall_s']:.1f}s of wall time")
    a, b = args.shards
    same = lakes[a] == lakes[b]
    differ = sorted(k for k in lakes[a].keys() | lakes[b].keys() if lakes[a].get(k) != lakes[b].get(k))
    print(f"\nlakes at N={a} and N={b}: {'identical' if same else 'DIFFERENT: ' + ', '.join(differ[:5])}")
    rate = {n: messages / results[n]["wall_s"] for n in (a, b)}
    print(f"parallel efficiency N={b}: {rate[b] / rate[a]:.2f} (messages/s N={a}: {rate[a]:.0f}, N={b}: {rate[b]:.0f})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
