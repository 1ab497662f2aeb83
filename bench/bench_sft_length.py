"""What in an SFT step moves reply length: its mixture's sources, its targets' length, or its learning rate?

    python bench/bench_sft_length.py [--home HOME] [--generation gen-N] [--variants kept default ...] [--cards]

HOME is a flywheel home whose generation kept its checkpoints and datasets (`make bench-robustness
BENCH_ARGS=--keep` prints one; default FLYWHEEL_HOME, else `data/`; by default its latest generation with an SFT
checkpoint). The generation's SFT step is trained again
from its parent, with the generation's own SFT settings (steps, batch, learning rate, seed; its
`sft/metrics.json`), on the mixture of each variant:

- `kept`: the SFT set the generation trained on, as it was built then;
- `default`: the set rebuilt from the generation's candidates with today's `SFTBuildConfig` (and the same size);
- `traffic`, `cards`, `served`, `self`: the same builder with only the traffic sources (rejection-sampled and
  engaged served replies), only the character-card ones (sampled and repaired rule-keepers), only the served
  replies, or only the policy's own best-of-n replies (without the balance, to show what it keeps);
- `no-balance`: the default builder without the length balance;
- `lr/3`, `lr/10`: the default set at a third and a tenth of the learning rate.

Each SFT checkpoint, and the parent, answer the generation's held-out pool prompts (the `eval_responses`
contexts the artifact-drift gate reads) with the evaluation's temperature and reply length, two replies per
prompt under each of two sampling seeds. The bench prints, per variant, the mixture's mean characters (and each
source's, with its rows), then the
checkpoint's mean characters of the replies that ended on their own (the gate's statistic), its change against
the parent's, and the share cut off at the token limit; with `--cards`, also the share of held-out and test card
replies keeping every rule and each rule's violation rate, per sampling seed (`bench_stage_lengths.card_rules`). Candidates recorded before
they carried `ended` count a reply of `max_new_tokens` tokens as cut off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SLICES = ("eval_user", "eval_internal")
VARIANTS = ("kept", "default", "traffic", "cards", "served", "self", "no-balance", "lr/3", "lr/10")
ONLY = {
    "traffic": {"rejection_sampled": 0.67, "served_engaged": 0.33},
    "cards": {"steerability": 0.77, "repaired": 0.23},
    "served": {"served_engaged": 1.0},
    "self": {"rejection_sampled": 1.0},
}
SEEDS = (0, 1)


def candidates_with_ended(candidates, max_new_tokens: int):
    """The candidates with `ended`, derived from `n_tokens` where they were recorded without it (a repaired reply
    takes its original's)."""
    import polars as pl

    if "ended" in candidates.columns and candidates["ended"].null_count() < candidates.height:
        return candidates
    from engine.style import ended_flags

    ended = ended_flags(candidates["n_tokens"].to_list(), max_new_tokens)
    frame = candidates.with_columns(pl.Series("ended", ended, dtype=pl.Boolean))
    originals = frame.filter(pl.col("n_tokens").is_not_null()).select(
        "prompt_id", "sample_idx", pl.col("generator").alias("_origin"), pl.col("ended").alias("_ended")
    )
    return (
        frame.with_columns(pl.col("generator").str.replace(r"\+repaired$", "").alias("_origin"))
        .join(originals, on=["prompt_id", "sample_idx", "_origin"], how="left")
        .with_columns(pl.col("ended").fill_null(pl.col("_ended")))
        .drop("_origin", "_ended")
    )


def main(argv: list[str] | None = None) -> int:
    import datasets
    import numpy as np
    import polars as pl

    from engine.policy import PolicyConfig
    from engine.sampling import CandidateConfig, sample_replies
    from engine.style import ended_flags
    from evaluation.offline_eval import OfflineEvalConfig
    from pipeline.lake import Lake, Partition
    from training.generation_plan import GenerationPlan, read_window
    from training.policy.datasets_build import privacy_pii_check
    from training.policy.sft_dataset import SFTBuildConfig, build_sft_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_home = Path(os.environ.get("FLYWHEEL_HOME") or REPO / "data")
    parser.add_argument("--home", type=Path, default=default_home, help="a flywheel home (default: %(default)s)")
    parser.add_argument("--generation", default=None, help="default: the latest generation with an SFT checkpoint")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cards", action="store_true", help="also score each checkpoint on the character cards")
    args = parser.parse_args(argv)

    home, gen = args.home, args.generation
    if gen is None:
        kept = sorted(
            (int(p.parent.parent.name.split("-")[1]), p.parent.parent.name)
            for p in (home / "models").glob("gen-*/sft/metrics.json")
            if p.parent.parent.name.split("-")[1].isdigit()
        )
        gen = kept[-1][1] if kept else "gen-1"
    sft_dir = home / "models" / gen / "sft"
    responses = home / "lake" / "eval_responses" / f"generation={gen}"
    if not (sft_dir / "metrics.json").is_file() or not responses.is_dir():
        print(f"nothing to measure: {gen} in {home} kept no SFT checkpoint or evaluation (run `make demo` first)")
        return 0
    trained = json.loads((sft_dir / "metrics.json").read_text())["config"]
    parent_dir = Path(trained["model_name_or_path"])
    manifest = json.loads((home / "models" / gen / "datasets" / "sft" / "manifest.json").read_text())
    days = manifest["parents"]["window"].split(",")
    frame = pl.read_parquet(responses / "*.parquet")
    parent = next(p for p in frame["policy"].unique().sort().to_list() if p != gen)
    frame = frame.filter(pl.col("slice").is_in(SLICES) & (pl.col("policy") == parent)).sort("slice", "prompt_id")
    contexts = [json.loads(c) for c in frame["context"].to_list()]
    eval_cfg = OfflineEvalConfig()
    sampling = CandidateConfig(
        num_samples=2,
        max_new_tokens=eval_cfg.max_new_tokens,
        temperature=eval_cfg.temperature,
        cpu_threads=args.threads,
    )

    lake = Lake(home)
    part = Partition.generation(gen)
    candidates = candidates_with_ended(lake.read("candidates", part), eval_cfg.max_new_tokens)
    plan = GenerationPlan(gen, 0, parent, days, "")
    served = read_window(lake, "prompts", plan)
    served = served.filter(pl.col("split") == "train") if served.height else served
    prompts = pl.concat([lake.read("candidate_prompts", part), served], how="diagonal_relaxed").unique("prompt_id")
    base = SFTBuildConfig(size=manifest["rows"])

    def lengths(folder: Path) -> tuple[float, float]:
        chars, cut = [], []
        for seed in SEEDS:
            texts, tokens, _ = sample_replies(
                PolicyConfig(model_name_or_path=str(folder)), contexts, replace(sampling, seed=seed)
            )
            chars += [len(t) for replies in texts for t in replies]
            cut += [not e for e in ended_flags([n for c in tokens for n in c], sampling.max_new_tokens)]
        c, k = np.array(chars, dtype=float), np.array(cut)
        return float(c[~k].mean()) if (~k).any() else float("nan"), float(k.mean())

    print(
        f"{gen} (parent {parent}, window {', '.join(days)}): SFT {trained['max_steps']} steps x "
        f"{trained['per_device_train_batch_size']} at learning rate {trained['learning_rate']:g}, retrained per "
        f"variant; {len(contexts)} held-out pool prompts x {sampling.num_samples} replies x seeds {SEEDS}"
    )
    parent_chars, parent_cut = lengths(parent_dir)
    print(f"  {'parent':<11} {'':>15} ended {parent_chars:5.1f} chars           cut off {parent_cut:5.1%}")
    checkpoints = [("parent", parent_dir)]
    with tempfile.TemporaryDirectory(prefix="bench-sft-length-") as work:
        for variant in args.variants:
            folder = Path(work) / variant.replace("/", "-")
            lr = trained["learning_rate"] / {"lr/3": 3, "lr/10": 10}.get(variant, 1)
            if variant == "kept":
                data_path = home / "models" / gen / "datasets" / "sft" / "dataset"
            else:
                cfg = base
                if variant in ONLY:
                    cfg = replace(base, mix=ONLY[variant], length_balance=None if variant == "self" else 0.05)
                elif variant == "no-balance":
                    cfg = replace(base, length_balance=None)
                build = build_sft_dataset(prompts, candidates, cfg, pii_check=privacy_pii_check())
                if variant == "default":
                    trend = build.manifest["length_trend"] or {}
                    print(
                        f"  the reward's within-prompt length trend, per log-character: traffic prompts "
                        f"{trend.get('slope', 0.0):.4f}, card prompts {(trend.get('cards') or {}).get('slope', 0.0):.4f}"
                        f" (kept set: {(manifest.get('length_trend') or {}).get('slope', 0.0):.4f})"
                    )
                data_path = folder / "dataset"
                build.dataset.save_to_disk(str(data_path))
            rows = datasets.load_from_disk(str(data_path))
            reply_chars = [len(m[-1]["content"] or "") for m in rows["messages"]]
            mix_chars = float(np.mean(reply_chars))
            by_source: dict[str, list[int]] = {}
            for source, n in zip(rows["source"], reply_chars, strict=True):
                by_source.setdefault(source, []).append(n)
            sources = ", ".join(f"{k} {np.mean(v):.1f} x{len(v)}" for k, v in sorted(by_source.items()))
            command = [sys.executable, "-m", "training.policy.sft", "--model_name_or_path", str(parent_dir)]
            command += ["--dataset_path", str(data_path), "--output_dir", str(folder / "sft")]
            command += ["--learning_rate", str(lr), "--max_steps", str(trained["max_steps"])]
            command += ["--per_device_train_batch_size", str(trained["per_device_train_batch_size"])]
            command += ["--seed", str(trained["seed"]), "--cpu_threads", str(args.threads)]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            if done.returncode:
                print(f"  {variant}: SFT failed\n{done.stderr[-2000:]}")
                continue
            chars, cut = lengths(folder / "sft")
            print(
                f"  {variant:<11} mixture {mix_chars:5.1f}  ended {chars:5.1f} chars ({chars / parent_chars - 1:+6.1%})"
                f"  cut off {cut:5.1%}   ({sources})",
                flush=True,
            )
            if args.cards:
                keep = Path(work) / "cards" / folder.name
                shutil.copytree(folder / "sft", keep)
                checkpoints.append((variant, keep))
        if args.cards:
            from bench_stage_lengths import card_rules  # this folder is the script's: its sibling bench

            for seed in SEEDS:
                print(f"card rules, sampling seed {seed}")
                card_rules(checkpoints, eval_cfg, replace(sampling, num_samples=1, seed=seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
