"""Benchmark: can the tiny default policy learn to keep character-card rules it was never shown?

Builds gen-0 exactly as `policy_base` does (the default `TinyLlamaConfig`, pre-trained on a window's training
prompts), measures its instruction-following rate on the held-out cards (the baseline, in this process), then
runs `--rounds` rounds of what a generation does for steerability: rule-checked rejection sampling on the
training cards, and SFT at the generation's default learning rate on the rule-keeping replies mixed with
engaged served replies. After each round it measures the held-out cards again and prints the difference
against gen-0 with a paired bootstrap interval.

    .venv/bin/python bench/bench_steer_learning.py [--home data] [--days 2026-01-09 2026-01-10] [--rounds 1]

Needs the days consolidated in FLYWHEEL_HOME (`make flywheel` or `make demo` does it); without any it says so
and stops. A few minutes on an
idle 2-core laptop (one torch thread). Figures go to stdout and bench/out/bench_steer_learning.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402

from assets.generation import GenerationSettings  # noqa: E402
from engine.cards import build_prompts  # noqa: E402
from engine.policy import PolicyConfig  # noqa: E402
from engine.sampling import CandidateConfig, sample_replies  # noqa: E402
from evaluation import steerability  # noqa: E402
from pipeline.lake import Lake  # noqa: E402
from training.generation_plan import GenerationPlan, training_prompts  # noqa: E402
from training.policy.dataset_lineage import to_dataset  # noqa: E402
from training.policy.models import (  # noqa: E402
    TinyLlamaConfig,
    build_tiny_policy,
    chat_messages,
    corpus_from_prompts,
)
from training.policy.sft import SFTRunConfig, run_sft  # noqa: E402
from training.policy.steer_data import steer_prompts, violations  # noqa: E402


def heldout(policy: Path, samples: int, max_new_tokens: int) -> tuple[pl.DataFrame, dict]:
    """Per held-out prompt, the share of its replies keeping every rule; and the overall rates."""
    prompts = build_prompts()
    contexts = [chat_messages(s, list(m)) for s, m in zip(prompts["system"], prompts["messages"].to_list())]
    cfg = CandidateConfig(num_samples=samples, max_new_tokens=max_new_tokens, temperature=0.7, cpu_threads=1)
    texts, _, _ = sample_replies(PolicyConfig(model_name_or_path=str(policy), cpu_threads=1), contexts, cfg)
    frame = pl.concat([prompts.with_columns(pl.Series("response", [t[k] for t in texts])) for k in range(samples)])
    rows, summary, _ = steerability.score_responses(frame)
    overall = summary.filter(pl.col("level") == "overall").row(0, named=True)
    per_prompt = rows.group_by("prompt_id").agg(pl.col("all_followed").cast(pl.Float64).mean().alias("value"))
    return per_prompt, {"following_rate": overall["following_rate"], "violation_rate": overall["violation_rate"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--home", default=os.environ.get("FLYWHEEL_HOME") or "data", help="FLYWHEEL_HOME with the days consolidated"
    )
    parser.add_argument("--days", nargs="*", default=[], help="the window's days (default: the lake's newest two)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--samples", type=int, default=4, help="replies per held-out prompt")
    args = parser.parse_args()
    gen = GenerationSettings()
    lake = Lake(Path(args.home))
    days = args.days or [d.isoformat() for d in lake.days("prompts")[-2:]]
    if not days:
        print(f"skipped: no consolidated days in {args.home}; run `make flywheel` (or `make demo`) first")
        return 0
    plan = GenerationPlan("bench", 1, "gen-0", days, "bench")
    prompts = training_prompts(lake, plan, cap=20_000)
    out: dict = {"days": days, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        tiny = TinyLlamaConfig(pretrain_steps=gen.pretrain_steps, cpu_threads=1)
        manifest = build_tiny_policy(corpus_from_prompts(prompts), root / "gen-0", tiny)
        out["policy"] = {"n_params": manifest["n_params"], "config": asdict(tiny), "build_s": time.perf_counter() - t0}
        base, rates = heldout(root / "gen-0", args.samples, gen.max_new_tokens)
        print(
            f"gen-0: {manifest['n_params']:,} parameters, held-out following {rates['following_rate']:.3f}, "
            f"violations {rates['violation_rate']:.3f}"
        )
        out["gen-0"] = rates
        cards = steer_prompts()
        contexts = [chat_messages(s, list(h)) for s, h in zip(cards["system"], cards["history"].to_list())]
        engaged = prompts.filter(
            pl.col("continued") & (pl.col("depth_after") >= 2) & pl.col("served_response").is_not_null()
        )
        policy = root / "gen-0"
        for k in range(1, args.rounds + 1):
            cfg = CandidateConfig(
                num_samples=gen.steer_samples, max_new_tokens=gen.max_new_tokens, seed=k, cpu_threads=1
            )
            texts, _, _ = sample_replies(PolicyConfig(model_name_or_path=str(policy), cpu_threads=1), contexts, cfg)
            kept = []
            for ctx, spec, replies in zip(contexts, cards["instructions"], texts, strict=True):
                good = sorted({t for t in replies if t.strip() and not violations(spec, t)})
                kept += [ctx + [{"role": "assistant", "content": t}] for t in good[:2]]
            served = [
                chat_messages(r["system"], r["history"], r["served_response"])
                for r in engaged.head(max(len(kept), 40)).iter_rows(named=True)
            ]
            data = root / f"data-{k}"
            to_dataset([{"messages": m} for m in kept * 2 + served], {"messages": "messages"}).save_to_disk(str(data))
            run_sft(
                SFTRunConfig(
                    model_name_or_path=str(policy),
                    dataset_path=str(data),
                    output_dir=str(root / f"round-{k}"),
                    max_steps=gen.sft_steps,
                    learning_rate=gen.sft_learning_rate,
                    device="cpu",
                    cpu_threads=1,
                )
            )
            policy = root / f"round-{k}"
            new, rates = heldout(policy, args.samples, gen.max_new_tokens)
            diff = steerability.following_difference(base, new)
            print(
                f"round {k}: {len(kept)} rule-keeping replies of {len(contexts) * gen.steer_samples} sampled; held-out "
                f"following {rates['following_rate']:.3f} (gen-0 {diff['base']:.3f}, difference "
                f"{diff['difference']:+.3f}, 95% CI {diff['ci_low']:+.3f} .. {diff['ci_high']:+.3f}), "
                f"violations {rates['violation_rate']:.3f}"
            )
            out["rounds"].append({"kept": len(kept), **rates, "difference": diff})
    target = REPO / "bench" / "out" / "bench_steer_learning.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
