"""Embedding and semantic-dedup throughput, as ratios against baselines run in the same process.

    python bench/bench_embed.py [--n 2000] [--batch-size 64] [--repeats 3] [--big]
                                [--agreement] [--agreement-days 14] [--agreement-rows 0]

Prints:
1. raw sentence-transformers ``encode`` on N real chat messages vs our pipeline stage
   (``embed_with_stats`` with a cold cache: hashing, cache lookup, encode, cache write); target >= 0.9x.
2. the ONNX Runtime backends (fp32, int8 with scales per batch, int8 with scales per text) vs raw
   encode, and their mean cosine to it; target: the faster one >= 2x with mean cosine >= 0.99.
3. batch independence of every backend: is a text's vector bit for bit the same when it is encoded
   alone, beside other texts, in another order, and (per text) with another thread count?
4. with --agreement: the replayed days of the default traffic (each prompt's embedded last turns, as the
   curation embeds them), through exact, near and semantic dedup with cross-day histories, once per
   backend: prompts/s of each backend as a ratio to torch fp32 on the same texts, and how many kept ids
   agree with torch fp32's (target for the CPU default: >= 99.5%).
5. semantic dedup incl. k-means on 100k (and with --big 1M) clustered 384-d vectors with planted
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
from pipeline.embed_config import CPU_BACKEND, EmbedConfig  # noqa: E402
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
    base_cfg = EmbedConfig(**common, backend="torch", device="cpu")
    raw = SentenceTransformer(resolve_model(base_cfg), device="cpu")
    pipe = Embedder(base_cfg)
    backends = (
        {}
        if args.skip_onnx
        else {name: Embedder(EmbedConfig(**common, backend=name)) for name in ("onnx", "onnx-int8", CPU_BACKEND)}
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
    print("  batch independence: texts whose vector is bit for bit the same alone, among others, reordered:")
    batch_independence({"torch": pipe, **backends}, texts[:200], common)


def batch_independence(embedders: dict, texts: list[str], common: dict) -> None:
    """Each text's vector when the texts are encoded together, each alone, in reverse order, beside
    other (longer) texts, and (for a per-text backend) with another thread count."""
    longest = sorted(texts, key=len)[-8:]
    for name, emb in embedders.items():
        together = emb.encode(texts)
        ways = {
            "alone": np.concatenate([emb.encode([t]) for t in texts]),
            "reversed": emb.encode(texts[::-1])[::-1],
            "beside others": emb.encode([*longest, *texts, *longest])[len(longest) : len(longest) + len(texts)],
        }
        if name == CPU_BACKEND:
            threads = 2 if common.get("num_threads") == 1 else 1
            other = Embedder(EmbedConfig(**{**common, "num_threads": threads}, backend=name))
            ways[f"{threads} thread(s)"] = other.encode(texts)
        same = {way: int((v == together).all(axis=1).sum()) for way, v in ways.items()}
        worst = max(float(np.abs(v - together).max()) for v in ways.values())
        verdict = "independent" if all(n == len(texts) for n in same.values()) else "DEPENDS ON THE BATCH"
        detail = ", ".join(f"{way} {n}/{len(texts)}" for way, n in same.items())
        print(f"    {name:<18} {detail}; max |diff| {worst:.1e}: {verdict}")


def replayed_days(n_days: int, rows: int) -> list:
    """(day, prompts) of the first `n_days` replayed days of the default traffic; `rows` > 0 keeps the
    day's first `rows` prompts in prompt id order (whole conversations but the last)."""
    from pipeline.ingest import ingest_day
    from pipeline.prompts import PromptConfig, cut_prompts
    from pipeline.source_config import SourceConfig
    from pipeline.sources import read_day

    cfg = SourceConfig()
    out = []
    for d in cfg.replay_days_list()[:n_days]:
        prompts, _ = cut_prompts(ingest_day(read_day(cfg, d), d).conversations, PromptConfig()).frames
        out.append((d, prompts.sort("prompt_id").head(rows) if rows else prompts))
    return out


def bench_agreement(args) -> None:
    """Each backend through the replayed days' exact, near and semantic dedup (cross-day histories), as
    the curation runs them; kept ids and prompts/s against torch fp32. Semantic dedup runs at the
    default eps and at the larger ones of --agreement-eps, where more pairs sit near the threshold."""
    from pipeline.dedup_exact import ExactDedupConfig, exact_dedup
    from pipeline.dedup_near import NearDedupConfig, near_dedup
    from pipeline.prompts import tail_text

    names = ["torch", "onnx", "onnx-int8", CPU_BACKEND]
    eps_list = [float(e) for e in args.agreement_eps.split(",")]
    model_dir = args.model_dir or tempfile.mkdtemp(prefix="bench-models-")
    common = dict(model_dir=model_dir, batch_size=args.batch_size, progress=False, num_threads=args.threads)
    embedders = {n: Embedder(EmbedConfig(**common, backend=n, device="cpu")) for n in names}
    days = replayed_days(args.agreement_days, args.agreement_rows)
    first = days[0][0]
    cache_root = Path(args.cache_dir or tempfile.mkdtemp(prefix="bench-embed-cache-"))
    kept = {(n, e): set() for n in names for e in eps_list}
    total, chars = 0, 0
    timing = {n: [0, 0.0, 0.0] for n in names}  # texts encoded, wall s, cpu s
    with tempfile.TemporaryDirectory(prefix="bench-agreement-") as tmp:
        root = Path(tmp)
        near_cfg = NearDedupConfig()
        exact_history = DayChain(root / "exact", first, ExactDedupConfig().history_kind())
        near_history = DayChain(root / "near", first, near_cfg.history_kind())
        for d, prompts in days:
            exact = exact_dedup(prompts, history=exact_history)
            near = near_dedup(exact.kept, near_cfg, history=near_history)
            texts = tail_text(near.kept, 3)
            total += near.kept.height
            chars += int(texts.str.len_chars().sum())
            line = f"  {d}: {prompts.height} prompts, {near.kept.height} after exact and near dedup; kept so far"
            for n, emb in embedders.items():
                cache = EmbeddingCache(cache_root, emb.model_id)
                (vectors, stats), w, c = timed(
                    lambda emb=emb, cache=cache, texts=texts: embed_with_stats(texts, cache=cache, embedder=emb)
                )
                timing[n][0] += stats.encoded
                timing[n][1] += w if stats.encoded else 0.0
                timing[n][2] += c if stats.encoded else 0.0
                for e in eps_list:
                    history = DayChain(root / f"semantic-{n}-{e}", first, history_kind(emb.model_id))
                    sem = semantic_dedup(
                        near.kept["prompt_id"],
                        vectors,
                        SemDedupConfig(eps=e),
                        day=d,
                        texts=near.kept["text"],
                        history=history,
                    )
                    kept[n, e] |= set(sem.kept["row_id"].to_list())
                line += f" {n} {'/'.join(str(len(kept[n, e])) for e in eps_list)}"
            print(line, flush=True)
    print(
        f"\nagreement with torch fp32 over {len(days)} replayed days ({total} prompts after exact and near dedup, "
        f"embedded texts of {chars / max(total, 1):.0f} characters on average):"
    )
    for e in eps_list:
        ref = kept["torch", e]
        print(
            f"  semantic dedup eps {e} (cosine >= {1 - e:.2f}): torch fp32 keeps {len(ref)}, drops {total - len(ref)}"
        )
        for n in names[1:]:
            mine = kept[n, e]
            differ = len(mine ^ ref)
            print(
                f"    {n:<18} keeps {len(mine):6d}; kept ids agreeing {len(mine & ref) / len(mine | ref):8.3%} "
                f"(shared / either kept); decisions that differ {differ}"
            )
    print("  target for the CPU default: >= 99.5% of kept ids agree at the default eps")
    base = timing["torch"]
    print("  speed on these texts (encoding only, the cache cold):")
    for n in names:
        enc, w, c = timing[n]
        if enc and base[0] == enc:
            print(
                f"    {n:<18} {enc / w:6.1f} prompts/s  wall ratio {base[1] / w:4.2f}x  cpu ratio {base[2] / c:4.2f}x"
            )
        else:
            print(f"    {n:<18} vectors from the cache: not timed")


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
    ap.add_argument("--agreement", action="store_true", help="dedup decisions of each backend on the replayed days")
    ap.add_argument("--agreement-days", type=int, default=14, help="replayed days of the agreement run")
    ap.add_argument("--agreement-rows", type=int, default=0, help="prompts per replayed day; 0 = the whole day")
    ap.add_argument("--agreement-eps", default="0.05,0.1,0.15", help="semantic dedup eps values (first: default)")
    ap.add_argument("--cache-dir", default=None, help="embedding cache of the agreement run (default: a fresh one)")
    ap.add_argument("--skip-semdedup", action="store_true")
    args = ap.parse_args()
    if not args.skip_embed:
        bench_embedding(args)
    if args.agreement:
        bench_agreement(args)
    if args.skip_semdedup:
        return
    print("\nsemantic dedup + k-means (SemDedupConfig defaults):")
    bench_semdedup(args.sem_rows)
    if args.big:
        bench_semdedup(1_000_000)


if __name__ == "__main__":
    main()
