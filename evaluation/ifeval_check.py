"""Any checkpoint on the held-out half of IFEval, as the offline evaluation answers it, from the command line.

    python -m evaluation.ifeval_check --ifeval_path input_data.jsonl --policy models/gen-1/grpo \\
        --parent models/gen-0/base

Each policy answers the same seeded sample of the held-out half (`evaluation.ifeval_heldout`) greedily, through the
sampling engine the evaluation uses, with the evaluation's own settings (`ifeval_max_prompts`,
`ifeval_max_new_tokens`, `sampling_backend`, `reply_cache_dir`, ...); the command prints the four IFEval
accuracies and, with `--parent`, new - parent with the paired intervals and the IFEval gate's verdict.
`--output_dir` keeps the scored prompts (`ifeval_rows.parquet`: each reply) and the summary tables.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from evaluation import release_gates
from evaluation.comparison import score_ifeval
from evaluation.ifeval_heldout import chat_contexts
from evaluation.offline_eval import OfflineEvalConfig, heldout_ifeval_inputs, ifeval_replies


@dataclass
class IFEvalCheckRun(OfflineEvalConfig):
    """The command line: which policies answer the held-out IFEval sample of `ifeval_path`."""

    policy: str | None = field(default=None, metadata={"help": "The policy scored (a model folder)."})
    parent: str | None = field(
        default=None, metadata={"help": "A policy to compare it with, paired on the same prompts; None: none."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where the scored prompts are written; None: not."})

    def __post_init__(self) -> None:
        missing = [n for n in ("ifeval_path", "policy") if not getattr(self, n)]
        if missing:
            raise ValueError(f"set {', '.join('--' + m for m in missing)} (see --help)")
        super().__post_init__()


def check(run: IFEvalCheckRun) -> dict:
    """Sample and score each policy on the held-out sample: summary (one row per role), differences and gate
    (None without a parent), drops, each role's engine and speed, and the prompts with their replies."""
    held, drops = heldout_ifeval_inputs(run)
    if held.is_empty():
        raise ValueError(f"{run.ifeval_path}: no readable IFEval prompt in its held-out half ({drops.height} dropped)")
    contexts = chat_contexts(held)
    policies = {"new": run.policy, **({"parent": run.parent} if run.parent else {})}
    replies, speed = {}, {}
    for role, path in policies.items():
        started = time.perf_counter()
        replies[role], stats = ifeval_replies(path, contexts, run)
        engine = "read back" if stats["read_back"] else stats.get("backend")
        speed[role] = (engine, stats.get("tokens_per_s"), time.perf_counter() - started)
    names = {role: Path(p).name for role, p in policies.items()}
    summary, _, differences, dropped = score_ifeval(held, replies, names, run.bootstrap_resamples, run.seed)
    gate = release_gates.ifeval_regression(differences, run.gate_config()) if differences is not None else None
    return {
        "summary": summary,
        "differences": differences,
        "gate": gate,
        "drops": pl.concat([drops, dropped]),
        "speed": speed,
        "held": held.with_columns(*(pl.Series(f"response_{role}", r) for role, r in replies.items())),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from training.policy.stage_config import parse_config

    run = parse_config(IFEvalCheckRun, argv)
    out = check(run)
    for role, (backend, tok_s, seconds) in out["speed"].items():
        rate = f" ({tok_s:.1f} tokens/s)" if tok_s else ""
        print(f"{role}: {backend} in {seconds:.0f} s{rate}")
    cols = ["role", "policy", "n_prompts", "n_instructions"] + [c for c in out["summary"].columns if c.endswith("_acc")]
    with pl.Config(tbl_rows=10, tbl_width_chars=140, float_precision=3):
        print(out["summary"].select([c for c in cols if c in out["summary"].columns]))
        if out["differences"] is not None:
            print(out["differences"])
    if out["gate"] is not None:
        print(f"ifeval_regression: {out['gate'].severity}: {out['gate'].detail}")
    if out["drops"].height:
        print(f"not scored: {dict(out['drops'].group_by('reason_code').len().iter_rows())}")
    if run.output_dir:
        target = Path(run.output_dir)
        target.mkdir(parents=True, exist_ok=True)
        out["held"].write_parquet(target / "ifeval_rows.parquet")
        out["summary"].write_parquet(target / "ifeval.parquet")
        if out["differences"] is not None:
            out["differences"].write_parquet(target / "ifeval_difference.parquet")
        print(f"written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
