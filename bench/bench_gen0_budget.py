"""Benchmark: what gen-0's pre-training budget buys, and what it costs.

Builds the tiny default policy (`TinyLlamaConfig`'s shape) on the same chit-chat conversations with each
budget in `--steps`, then samples replies to the same held-out prompts from each, and prints per budget: the
pre-training loss at the end, the build time as a ratio of the first budget's (same process, same machine),
and a few replies to read. The default traffic is the `chitchat-dataset` package's, as the flywheel replays it.

    .venv/bin/python bench/bench_gen0_budget.py                      # 200 and 1500 steps
    .venv/bin/python bench/bench_gen0_budget.py --steps 200 800 1500 --conversations 3000

It takes about as long as the budgets' pre-training together (the largest dominates).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import chitchat_dataset  # noqa: E402

from engine.policy import PolicyConfig  # noqa: E402
from engine.sampling import CandidateConfig, sample_replies  # noqa: E402
from training.policy.models import TinyLlamaConfig, build_tiny_policy  # noqa: E402


def conversations(n_train: int, n_prompts: int, seed: int = 0) -> tuple[list[list[dict]], list[list[dict]]]:
    """Training conversations and held-out prompts (a conversation cut before one of its later replies)."""
    convs = []
    for _, conv in sorted(chitchat_dataset.Dataset().items()):
        turns = [" ".join(m["text"] for m in turn) for turn in conv["messages"]]
        convs.append([{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)])
    random.Random(seed).shuffle(convs)
    prompts = []
    for c in convs[-300:]:  # the last conversations are never trained on; each is cut before a later reply
        cut = next((i for i in range(2, len(c)) if c[i]["role"] == "assistant"), None)
        if cut is not None:
            prompts.append(c[:cut])
    return convs[:n_train], prompts[:n_prompts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 1500])
    parser.add_argument("--conversations", type=int, default=6000, help="training conversations")
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts answered by each budget")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    train, prompts = conversations(args.conversations, args.prompts)
    base_time = None
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.steps:
            folder = Path(tmp) / f"steps-{steps}"
            started = time.perf_counter()
            manifest = build_tiny_policy(train, folder, TinyLlamaConfig(pretrain_steps=steps, cpu_threads=args.threads))
            took = time.perf_counter() - started
            base_time = base_time or took
            replies, _, _ = sample_replies(
                PolicyConfig(model_name_or_path=str(folder), cpu_threads=args.threads),
                prompts,
                CandidateConfig(num_samples=2, max_new_tokens=48, temperature=0.7, seed=0),
            )
            losses = manifest["pretrain"]["loss_curve"]
            print(
                f"\n{steps} pre-training steps: final loss {losses[-1]:.3f} (first {losses[0]:.3f}), "
                f"{manifest['n_params']:,} parameters, build time x{took / base_time:.2f} of the first budget"
            )
            for reply in replies:  # the first of each prompt's two samples
                print(f"  | {reply[0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
