"""Embedding and semantic-dedup throughput, as ratios against baselines run in the same process.

    python bench/bench_embed.py [--n 2000] [--batch-size 64] [--repeats 3] [--big]

Prints:
1. raw sentence-transformers ``encode`` on N real chat messages vs our pipeline stage
   (``embed_with_stats`` with a cold cache: hashing, cache lookup, encode, cache write); target >= 0.9x.
2. the ONNX Runtime backends (fp32, int8) vs raw encode, and their mean cosine to it;
   target: the faster one >= 2x with mean cosine >= 0.99.
3. semantic dedup incl. k-means on 100k (and with --big 1M) clustered 384-d vectors with planted
   near-duplicates; target: 1M <= 5 minutes.

Each timing is the best of --repeats runs, interleaved with its baseline, after a warm-up on other
texts (the first batches of a new shape are slow in torch and would otherwise count against whoever
runs first). Wall time and process CPU time are both shown: on a shared machine CPU time is the
steadier figure, and ``--threads 1`` avoids the thread-barrier waits that inflate multi-threaded
timings when other processes share the cores.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.embed import embed_with_stats  # noqa: E402
from pipeline.embed_config import EmbedConfig  # noqa: E402
from pipeline.embed_model import resolve_model  # noqa: E402
from pipeline.embedder import Embedder  # noqa: E402
from pipeline.embedding_cache import EmbeddingCache  # noqa: E402
from pipeline.history import DayChain  # noqa: E402
from pipeline.semdedup import SemDedupConfig, commit_run, history_kind, semantic_dedup, unit_rows  # noqa: E402


def chat_texts(n: int, seed: int = 0) -> list[str]:
    """Distinct real chat messages: ../shared/data when present, else the chitchat-dataset package."""
    shared = REPO.parent / "shared" / "data" / "chitchat_dataset.json.gz"
    if shared.is_file():
        data = json.loads(gzip.decompress(shared.read_bytes()))
        origin = str(shared.relative_to(REPO.parent))
    else:
        spec = importlib.util.find_spec("chitchat_dataset")
        if spec is None:
            raise SystemExit("no chat data: install chitchat-dataset or provide ../shared/data")
        path = Path(list(spec.submodule_search_locations)[0]) / "dataset.json"
        data = json.loads(path.read_text())
        origin = "chitchat_dataset package"
    texts = list(
        dict.fromkeys(m["text"] for c in data.values() for turn in c["messages"] for m in turn if m["text"].strip())
    )
    random.Random(seed).shuffle(texts)
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} distinct messages, asked for {n}")
    print(f"texts: {n} distinct messages from {origin}, mean {np.mean([len(t) for t in texts[:n]]):.0f} chars")
    return texts[:n]


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def best(rows):
    """(min wall, min cpu) over repeats."""
    return min(r[0] for r in rows), min(r[1] for r in rows)


def line(name, wall, cpu, n, base=None):
    rate = n / wall
    ratio = "" if base is None else f"  wall ratio {base[0] / wall:5.2f}x  cpu ratio {base[1] / cpu:5.2f}x"
    print(f"  {name:<34} {wall:7.2f} s wall {cpu:7.2f} s cpu  {rate:8.0f} texts/s{ratio}")


def bench_embedding(args) -> None:
    from sentence_transformers import SentenceTransformer

    texts = chat_texts(args.n + 512)
    warm, texts = texts[args.n :], texts[: args.n]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model_dir or tempfile.mkdtemp(prefix="bench-models-")
    common = dict(model_dir=model_dir, batch_size=args.batch_size, progress=False, num_threads=args.threads)
    base_cfg = EmbedConfig(**common)
    raw = SentenceTransformer(resolve_model(base_cfg), device="cpu")
    pipe = Embedder(base_cfg)
    backends = (
        {}
        if args.skip_onnx
        else {name: Embedder(EmbedConfig(**common, backend=name)) for name in ("onnx", "onnx-int8")}
    )
    for model in [raw.encode, pipe.encode, *(b.encode for b in backends.values())]:
        model(warm, batch_size=args.batch_size) if model is raw.encode else model(warm)

    runs: dict[str, list] = {k: [] for k in ["raw", "pipeline", "pipeline (warm cache)", *backends]}
    vecs = {}
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        for r in range(args.repeats):
            ref, w, c = timed(lambda: raw.encode(texts, batch_size=args.batch_size, normalize_embeddings=True))
            runs["raw"].append((w, c))
            vecs["raw"] = ref
            cache = EmbeddingCache(Path(tmp) / f"run{r}", pipe.model_id)  # cold each time
            (v, stats), w, c = timed(lambda cache=cache: embed_with_stats(texts, cache=cache, embedder=pipe))
            assert stats.encoded == len(texts), stats
            runs["pipeline"].append((w, c))
            vecs["pipeline"] = v
            _, w, c = timed(lambda cache=cache: embed_with_stats(texts, cache=cache, embedder=pipe))
            runs["pipeline (warm cache)"].append((w, c))
            for name, emb in backends.items():
                v, w, c = timed(lambda emb=emb: emb.encode(texts))
                runs[name].append((w, c))
                vecs[name] = v
    base = best(runs["raw"])
    threads = args.threads or f"default ({torch.get_num_threads()})"
    print(f"\nembedding {args.n} texts, batch {args.batch_size}, threads {threads}, best of {args.repeats}:")
    line("raw sentence-transformers encode", *base, args.n)
    for name in runs:
        if name != "raw":
            line(name, *best(runs[name]), args.n, base)
    print("  mean / min cosine to raw encode:")
    for name in ["pipeline", *backends]:
        cos = (vecs[name] * vecs["raw"]).sum(axis=1)
        print(f"    {name:<16} {cos.mean():.5f} / {cos.min():.5f}")


def clustered_with_duplicates(n: int, d: int = 384, topics: int = 2000, dup_share: float = 0.1, seed: int = 0):
    """n rows around `topics` centres (cosine ~0.5 to their centre, distinct from each other), of
    which `dup_share` are near copies (cosine ~0.995) of other rows."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((topics, d), dtype=np.float32))
    n_dup = int(n * dup_share)
    base = n - n_dup
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, base, 100_000):  # in blocks: bounded temporaries
        e = min(base, s + 100_000)
        x[s:e] = unit_rows(
            centres[rng.integers(0, topics, e - s)] + unit_rows(rng.standard_normal((e - s, d), dtype=np.float32))
        )
    src = rng.integers(0, base, n_dup)
    for s in range(0, n_dup, 100_000):
        e = min(n_dup, s + 100_000)
        noise = unit_rows(rng.standard_normal((e - s, d), dtype=np.float32))
        x[base + s : base + e] = unit_rows(x[src[s:e]] + 0.1 * noise)
    return x, n_dup


def bench_semdedup(n: int) -> None:
    x, planted = clustered_with_duplicates(n)
    ids = [f"r{i}" for i in range(n)]
    res, w, c = timed(lambda: semantic_dedup(ids, x, SemDedupConfig(), day=date(2024, 1, 1)))
    s = res.counters
    print(
        f"  semdedup {n:>9,} x 384: {w:7.1f} s wall {c:7.1f} s cpu ({s.n_clusters} clusters, largest "
        f"{s.largest_cluster}); dropped {s.dropped_within_day:,} of {planted:,} planted near-duplicates"
    )
    # a second day against the first day's kept rows: 10% of its rows are near copies of day 1
    with tempfile.TemporaryDirectory(prefix="bench-semindex-") as tmp:
        day1 = date(2024, 1, 1)
        history = DayChain(tmp, day1, history_kind(x.shape[1]))
        kept = np.isin(np.array(ids), res.kept["row_id"].to_numpy())
        _, w_save, _ = timed(
            lambda: commit_run(history, day1, [ids[i] for i in np.flatnonzero(kept)], x[kept], SemDedupConfig())
        )
        fresh, _ = clustered_with_duplicates(n, seed=1)
        rng = np.random.default_rng(2)
        copies = rng.choice(np.flatnonzero(kept), size=n // 10, replace=False)
        fresh[: n // 10] = unit_rows(
            x[copies] + 0.1 * unit_rows(rng.standard_normal((n // 10, x.shape[1]), dtype=np.float32))
        )
        ids2 = [f"s{i}" for i in range(n)]
        res2, w, c = timed(lambda: semantic_dedup(ids2, fresh, SemDedupConfig(), day=date(2024, 1, 2), history=history))
        s = res2.counters
        print(
            f"  + next day vs {int(kept.sum()):,} kept (index committed in {w_save:.1f} s): {w:7.1f} s wall "
            f"{c:7.1f} s cpu; dropped {s.dropped_earlier_days:,} of {n // 10:,} planted copies of the earlier day"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="real texts to embed")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads; 0 = library default")
    ap.add_argument("--model-dir", default=None, help="model folder (default: a temporary one)")
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--sem-rows", type=int, default=100_000, help="rows of the semantic dedup run")
    ap.add_argument("--big", action="store_true", help="also run semantic dedup on 1M rows")
    args = ap.parse_args()
    if not args.skip_embed:
        bench_embedding(args)
    print("\nsemantic dedup + k-means (SemDedupConfig defaults):")
    bench_semdedup(args.sem_rows)
    if args.big:
        bench_semdedup(1_000_000)


if __name__ == "__main__":
    main()
