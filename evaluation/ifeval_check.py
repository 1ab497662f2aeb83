"""Any checkpoint on the held-out half of IFEval, as the offline evaluation answers it, from the command line.

    python -m evaluation.ifeval_check --inputs input_data.jsonl --policy models/gen-1/grpo \\
        --parent models/gen-0/base

Each policy answers the same seeded sample of the held-out half (`evaluation.ifeval_heldout`) greedily, through the
sampling engine the evaluation uses; the command prints its four IFEval accuracies and, with `--parent`, new -
parent with the paired intervals and the IFEval gate's verdict. `--output_dir` keeps the scored prompts
(`ifeval_rows.parquet`: each reply and which instructions it kept) and the summary tables.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from engine.sampling import CandidateConfig
from evaluation import release_gates
from evaluation.comparison import score_ifeval
from evaluation.gate_config import GateConfig
from evaluation.ifeval_files import read_inputs
from evaluation.ifeval_heldout import IFEvalSplitConfig, heldout_ifeval
from evaluation.offline_eval import OfflineEvalConfig, ifeval_replies
from pipeline.config_fields import forwarded
from pipeline.prompts import chat_messages


@dataclass
class IFEvalCheckRun:
    inputs: str | None = field(default=None, metadata={"help": "IFEval input JSONL (input_data.jsonl)."})
    policy: str | None = field(default=None, metadata={"help": "The policy scored (a model folder)."})
    parent: str | None = field(
        default=None, metadata={"help": "A policy to compare it with, paired on the same prompts; None: none."}
    )
    max_prompts: int = forwarded(OfflineEvalConfig, "ifeval_max_prompts")
    max_new_tokens: int = forwarded(OfflineEvalConfig, "ifeval_max_new_tokens")
    heldout_fraction: float = forwarded(IFEvalSplitConfig, "heldout_fraction")
    split_salt: str = forwarded(IFEvalSplitConfig, "salt")
    backend: str = forwarded(CandidateConfig, "backend")
    device: str = forwarded(CandidateConfig, "device")
    cpu_threads: int | None = forwarded(CandidateConfig, "cpu_threads")
    bootstrap_resamples: int = forwarded(OfflineEvalConfig, "bootstrap_resamples")
    ifeval_margin: float = forwarded(GateConfig, "ifeval_margin")
    min_ifeval_prompts: int = forwarded(GateConfig, "min_ifeval_prompts")
    reply_cache_dir: str | None = forwarded(OfflineEvalConfig, "reply_cache_dir")
    output_dir: str | None = field(default=None, metadata={"help": "Where the scored prompts are written; None: not."})

    def __post_init__(self) -> None:
        missing = [n for n in ("inputs", "policy") if not getattr(self, n)]
        if missing:
            raise ValueError(f"set {', '.join('--' + m for m in missing)} (see --help)")
        if not Path(self.inputs).is_file():
            raise ValueError(f"--inputs {self.inputs}: no such file (IFEval's input_data.jsonl)")

    def eval_config(self) -> OfflineEvalConfig:
        return OfflineEvalConfig(
            ifeval_max_prompts=self.max_prompts,
            ifeval_max_new_tokens=self.max_new_tokens,
            ifeval_heldout_fraction=self.heldout_fraction,
            ifeval_split_salt=self.split_salt,
            sampling_backend=self.backend,
            device=self.device,
            cpu_threads=self.cpu_threads,
            bootstrap_resamples=self.bootstrap_resamples,
            ifeval_margin=self.ifeval_margin,
            min_ifeval_prompts=self.min_ifeval_prompts,
            reply_cache_dir=self.reply_cache_dir,
        )


def check(run: IFEvalCheckRun) -> dict[str, pl.DataFrame | release_gates.GateResult | None]:
    """Sample and score each policy on the held-out sample: summary (one row per role), differences and gate
    (None without a parent), drops."""
    config = run.eval_config()
    inputs, drops = read_inputs(run.inputs)
    held = heldout_ifeval(inputs, config.ifeval_max_prompts, config.ifeval_split())
    if held.is_empty():
        raise ValueError(f"{run.inputs}: no readable IFEval prompt in its held-out half ({drops.height} lines dropped)")
    contexts = [chat_messages(None, [{"role": "user", "content": p}]) for p in held["prompt"]]
    policies = {"new": run.policy, **({"parent": run.parent} if run.parent else {})}
    replies, speed = {}, {}
    for role, path in policies.items():
        started = time.perf_counter()
        replies[role], stats = ifeval_replies(path, contexts, config)
        engine = "read back" if stats["read_back"] else stats.get("backend")
        speed[role] = (engine, stats.get("tokens_per_s"), time.perf_counter() - started)
    names = {role: Path(p).name for role, p in policies.items()}
    summary, _, differences, dropped = score_ifeval(held, replies, names, config.bootstrap_resamples, config.seed)
    gate = release_gates.ifeval_regression(differences, config.gate_config()) if differences is not None else None
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
