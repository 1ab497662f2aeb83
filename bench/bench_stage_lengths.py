"""Which training stage moves reply length, and which one learns or forgets a card's rules? Each checkpoint of one
generation answers that generation's held-out pool prompts, sampled as the offline evaluation samples them.

    python bench/bench_stage_lengths.py [--home HOME] [--generation gen-1] [--threads 1] [--seed N] [--cards]

HOME is a flywheel home whose generation kept its checkpoints: by default FLYWHEEL_HOME, else `data/` (where
`make demo` and `make flywheel` write), or a home that `make bench-robustness BENCH_ARGS=--keep` printed. The prompts are the contexts of the generation's `eval_responses` on
the `eval_user` and `eval_internal` slices, the ones the artifact-drift gate's mean reply length is read on.
The parent policy and the generation's SFT, DPO and GRPO checkpoints each answer every prompt once, with the
evaluation's temperature, reply length and seed (`OfflineEvalConfig`), so the parent's figures match the gate's.

Prints, per checkpoint, the mean and median characters of its replies and the mean's change against the
parent's, the share of replies cut off at the token limit (they did not end on their own) and the mean length of
the others. With `--cards`, each checkpoint also answers the held-out (gate) and test character cards as the
offline evaluation does (`steerability_samples` replies per card prompt), and the bench prints its share of replies
keeping every rule and each rule's violation rate: where along SFT -> DPO -> GRPO a rule is learnt or forgotten.
All are figures of sampled replies: rerun with another `--seed` to see how much they move.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SLICES = ("eval_user", "eval_internal")
STAGES = ("sft", "dpo", "grpo")


def checkpoints(home: Path, generation: str, parent: str) -> list[tuple[str, Path]]:
    """(name, folder) of the parent policy and of the generation's stages, in training order."""
    parent_dir = home / "models" / parent
    parent_dir = parent_dir / "base" if (parent_dir / "base").is_dir() else parent_dir / "grpo"
    out = [(f"{parent} (parent)", parent_dir)]
    out += [(f"{generation}/{s}", home / "models" / generation / s) for s in STAGES]
    missing = [str(p) for _, p in out if not (p / "config.json").is_file()]
    if missing:
        raise SystemExit(f"no checkpoint in {', '.join(missing)}: run the generation with its checkpoints kept")
    return out


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import polars as pl

    from engine.policy import PolicyConfig
    from engine.sampling import CandidateConfig, sample_replies
    from evaluation.offline_eval import OfflineEvalConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_home = Path(os.environ.get("FLYWHEEL_HOME") or REPO / "data")
    parser.add_argument("--home", type=Path, default=default_home, help="a flywheel home (default: %(default)s)")
    parser.add_argument("--generation", default="gen-1")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed; default: the evaluation's")
    parser.add_argument("--cards", action="store_true", help="also score each checkpoint on the character cards")
    args = parser.parse_args(argv)

    eval_cfg = OfflineEvalConfig()
    responses = args.home / "lake" / "eval_responses" / f"generation={args.generation}"
    if not responses.is_dir():
        # `make bench` runs every bench without arguments: on a fresh clone there is nothing to measure yet
        print(f"nothing to measure: {args.generation} was not evaluated in {args.home} (run `make demo` first)")
        return 0
    frame = pl.read_parquet(responses / "*.parquet")
    parent = next(p for p in frame["policy"].unique().sort().to_list() if p != args.generation)
    frame = frame.filter(pl.col("slice").is_in(SLICES) & (pl.col("policy") == parent)).sort("slice", "prompt_id")
    prompts = [json.loads(c) for c in frame["context"].to_list()]
    cfg = CandidateConfig(
        num_samples=1,
        max_new_tokens=eval_cfg.max_new_tokens,
        temperature=eval_cfg.temperature,
        seed=eval_cfg.seed if args.seed is None else args.seed,
        cpu_threads=args.threads,
    )
    print(
        f"{len(prompts)} held-out prompts of {args.generation} ({', '.join(SLICES)}), temperature "
        f"{cfg.temperature}, at most {cfg.max_new_tokens} tokens, seed {cfg.seed}"
    )
    base = None
    for name, folder in checkpoints(args.home, args.generation, parent):
        texts, tokens, _ = sample_replies(PolicyConfig(model_name_or_path=str(folder)), prompts, cfg)
        lengths = np.array([len(t) for replies in texts for t in replies], dtype=float)
        cut = np.array([n >= cfg.max_new_tokens for counts in tokens for n in counts])
        mean = float(lengths.mean())
        base = mean if base is None else base
        ended = f"{lengths[~cut].mean():5.1f}" if (~cut).any() else "    -"
        print(
            f"  {name:<18} mean {mean:6.1f} chars ({mean / base - 1:+.1%}), median {np.median(lengths):5.1f}; "
            f"cut off at {cfg.max_new_tokens} tokens {cut.mean():5.1%}, mean of the replies that ended {ended}"
        )
    if args.cards:
        card_rules(checkpoints(args.home, args.generation, parent), eval_cfg, cfg)
    return 0


def card_rules(models: list[tuple[str, Path]], eval_cfg, cfg) -> None:
    """Per checkpoint and card split: the share of replies keeping every rule, and each rule's violation rate."""
    import polars as pl

    from engine.cards import HELDOUT, TEST
    from engine.policy import PolicyConfig
    from engine.sampling import sample_replies
    from evaluation import steerability
    from evaluation.offline_eval import steerability_prompts
    from pipeline.prompts import chat_messages

    for split in (HELDOUT, TEST):
        cards = steerability_prompts(eval_cfg, split)
        contexts = [chat_messages(s, list(m)) for s, m in zip(cards["system"], cards["messages"].to_list())]
        print(f"{split} cards: {cards.height} replies per checkpoint (violation rate per rule, share of checks failed)")
        for name, folder in models:
            texts, _, _ = sample_replies(PolicyConfig(model_name_or_path=str(folder)), contexts, cfg)
            scores = steerability.score_responses(cards.with_columns(response=pl.Series([t[0] for t in texts])))
            summary = scores.summary
            overall = summary.filter(pl.col("level") == "overall")["following_rate"][0]
            rules = summary.filter(pl.col("level") == "instruction").sort("key")
            rates = ", ".join(f"{k} {v:.2f}" for k, v in rules.select("key", "violation_rate").iter_rows())
            print(f"  {name:<18} every rule kept {overall:.3f}; {rates}")


if __name__ == "__main__":
    raise SystemExit(main())
