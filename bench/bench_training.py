"""Benchmark: what launching SFT as a script costs, and candidate generation throughput.

1. SFT training tokens/s of `python -m training.policy.sft` run as a subprocess (as a Dagster Pipes asset runs it)
   against the same TRL SFTTrainer set up by hand in this process: the ratio is the script's overhead
   (target <= 1.05). Process start-up (imports, model load) is reported separately as wall time.
2. Candidate generation tokens/s of `generate_candidates` against a hand-written batched `model.generate`
   loop over the same prompts (the ratio is the cost of prompt fitting, scoring and style features).

    .venv/bin/python bench/bench_training.py [--steps 20] [--rounds 2] [--threads 1]

Runs in about a minute on a 2-core laptop. Figures go to stdout and bench/out/bench_training.json.
Timings on a shared machine are noisy: each measurement takes the best of `--rounds` alternating runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from engine.sampling import CandidateConfig, fit_prompt  # noqa: E402
from pipeline import schema  # noqa: E402
from training.policy.candidates import generate_candidates  # noqa: E402
from training.policy.models import TinyLlamaConfig, build_tiny_policy  # noqa: E402

CHITCHAT = REPO.parent / "shared" / "data" / "chitchat_dataset.json.gz"


def conversations(n: int) -> list[list[dict]]:
    """Real chit-chat when the shared data is beside the repo, else a synthetic stand-in."""
    if CHITCHAT.is_file():
        raw = json.load(gzip.open(CHITCHAT))
        out = []
        for conv in raw.values():
            msgs = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": "\n".join(m["text"] for m in turn)}
                for i, turn in enumerate(conv["messages"])
            ]
            if len(msgs) >= 4:
                out.append(msgs[:6] if len(msgs[:6]) % 2 == 0 else msgs[:5])
            if len(out) == n:
                return out
    topics = ["pizza", "hiking", "music", "cats", "travel", "books", "coffee", "movies"]
    return [
        [
            {"role": "user", "content": f"do you like {topics[i % 8]}? I tried it {i} times"},
            {"role": "assistant", "content": f"I really like {topics[(i + 3) % 8]}, and {topics[i % 8]} too."},
        ]
        for i in range(n)
    ]


def sft_by_hand(policy: str, dataset_dir: str, out: str, steps: int, batch: int, max_length: int) -> float:
    """The baseline: TRL's SFTTrainer configured directly, in this process."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    ds = datasets.load_from_disk(dataset_dir)
    args = SFTConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        lr_scheduler_type="cosine",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        activation_checkpointing=False,
        disable_tqdm=True,
        use_cpu=True,
        bf16=False,
        max_length=max_length,
        assistant_only_loss=True,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.remove_callback(PrinterCallback)  # the script reports through its own callback instead
    result = trainer.train()
    return trainer.state.num_input_tokens_seen / result.metrics["train_runtime"]


def sft_as_script(
    policy: str, dataset_dir: str, out: str, steps: int, batch: int, max_length: int, threads: int
) -> tuple[float, float]:
    config = Path(out) / "config.json"
    Path(out).mkdir(parents=True, exist_ok=True)
    config.write_text(
        json.dumps(
            {
                "model_name_or_path": policy,
                "dataset_path": dataset_dir,
                "output_dir": out,
                "max_steps": steps,
                "per_device_train_batch_size": batch,
                "device": "cpu",
                "max_length": max_length,
                "cpu_threads": threads,
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "training.policy.sft", "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    return metrics["tokens_per_s"], wall


@torch.inference_mode()
def generate_by_hand(policy: str, contexts: list[list[dict]], cfg: CandidateConfig) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    # the same stop tokens as generate_candidates (end of turn, or the start of a new one)
    eos = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_start|>")]
    torch.manual_seed(cfg.seed)
    tokens, seconds = 0, 0.0
    for start in range(0, len(contexts), cfg.batch_size):
        enc = [
            {"input_ids": fit_prompt(tok, m, cfg.max_prompt_tokens)} for m in contexts[start : start + cfg.batch_size]
        ]
        batch = tok.pad(enc, return_tensors="pt")
        t0 = time.perf_counter()
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=cfg.num_samples,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
        )
        seconds += time.perf_counter() - t0
        gen = out[:, batch["input_ids"].shape[1] :]
        tokens += int((gen != tok.pad_token_id).sum())  # the stop token counts, padding after it does not
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="SFT optimizer steps per run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per measurement (best kept)")
    parser.add_argument("--gen-rounds", type=int, default=3, help="alternating generation runs (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    convs = conversations(400)

    t0 = time.perf_counter()
    policy_cfg = TinyLlamaConfig(pretrain_steps=20, cpu_threads=args.threads, device="cpu")
    manifest = build_tiny_policy(convs, work / "policy", policy_cfg)
    policy = str(work / "policy")
    print(
        f"policy: {manifest['n_params']:,} params, built in {time.perf_counter() - t0:.1f}s "
        f"(pre-training {manifest['pretrain']['tokens_per_s']:.0f} tokens/s)"
    )

    import datasets

    ds_dir = str(work / "sft")
    datasets.Dataset.from_dict({"messages": convs[:256]}).save_to_disk(ds_dir)

    hand, script, walls = [], [], []
    for r in range(args.rounds):
        hand.append(sft_by_hand(policy, ds_dir, str(work / f"hand{r}"), args.steps, args.batch, 256))
        tps, wall = sft_as_script(policy, ds_dir, str(work / f"script{r}"), args.steps, args.batch, 256, args.threads)
        script.append(tps)
        walls.append(wall)
    sft_ratio = max(hand) / max(script)
    print(
        f"SFT tokens/s  in-process by hand: {max(hand):8.0f}   as script: {max(script):8.0f}   "
        f"overhead ratio {sft_ratio:.3f} (target <= 1.05); script wall {min(walls):.1f}s incl. start-up"
    )

    rows = [
        {
            "prompt_id": f"b{i}",
            "history": c[:-1] if c[-1]["role"] == "assistant" else c[:-2],
            "system": None,
            "day": None,
        }
        for i, c in enumerate(convs[256:272])
    ]
    prompts = pl.DataFrame(
        rows, schema={"prompt_id": pl.Utf8, "history": pl.List(schema.MESSAGE), "system": pl.Utf8, "day": pl.Date}
    )
    cand_cfg = CandidateConfig(num_samples=4, max_new_tokens=32, batch_size=8, device="cpu", cpu_threads=args.threads)
    contexts = [r["history"] for r in rows]
    score = lambda c, r: np.array([len(x) for x in r], dtype=float)  # noqa: E731
    base, ours = [], []
    for _ in range(args.gen_rounds):
        base.append(generate_by_hand(policy, contexts, cand_cfg))
        ours.append(generate_candidates(prompts, [policy], score, cfg=cand_cfg).stats["tokens_per_s"])
    gen_ratio = max(ours) / max(base)
    print(
        f"generation tokens/s  raw generate: {max(base):8.0f}   generate_candidates: {max(ours):8.0f}   "
        f"ratio {gen_ratio:.3f}"
    )

    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_training.json").write_text(
        json.dumps(
            {
                "machine": f"cpu, {os.cpu_count()} cores, torch threads {args.threads}",
                "steps": args.steps,
                "sft_tokens_per_s_by_hand": hand,
                "sft_tokens_per_s_script": script,
                "sft_overhead_ratio": sft_ratio,
                "script_wall_s": walls,
                "gen_tokens_per_s_raw": base,
                "gen_tokens_per_s_candidates": ours,
                "gen_ratio": gen_ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
