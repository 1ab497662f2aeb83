"""Candidate replies: N sampled replies per prompt from a pool of policies, each scored and described.

The pool is the current generation, earlier ones and optionally a larger model; sampling from several
policies widens what rejection sampling and preference pairs can choose from. Every candidate gets the
pointwise reward (`score_fn(contexts, responses) -> np.ndarray`, any scorer such as the reward model's
`score`), an optional p(continue) from a second scorer, and the style features the artifact filters read.
Replies are sampled by `engine.sampling.sample_replies`, as evaluation samples them; tokens/s is reported per
generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.policy import PolicyConfig
from engine.sampling import CandidateConfig, sample_replies, valid_prompts
from engine.style import ended_flags, style_features
from pipeline import schema
from pipeline.prompts import chat_messages

ScoreFn = Callable[[list[list[dict]], list[str]], np.ndarray]

STAGE = "candidates"

CANDIDATES = pl.Schema(
    {
        "prompt_id": pl.Utf8,
        "generator": pl.Utf8,
        "sample_idx": pl.Int32,
        "text": pl.Utf8,
        "rm_pointwise": pl.Float64,
        "p_continue": pl.Float64,
        "n_chars": pl.Int32,
        "n_emoji": pl.Int32,
        "has_list": pl.Boolean,
        "n_tokens": pl.Int32,
        # False: run into `max_new_tokens`, cut off mid-reply (never a training target); None: not sampled here
        "ended": pl.Boolean,
    }
)


@dataclass
class CandidateResult:
    frame: pl.DataFrame  # CANDIDATES
    drops: pl.DataFrame  # schema.DROPS: prompts that could not be sampled
    stats: dict[str, Any]  # per generator: prompts, samples, gen_tokens, gen_seconds, tokens_per_s


def _as_policy(spec: str | Path | PolicyConfig, device: str, cpu_threads: int | None = None) -> PolicyConfig:
    if isinstance(spec, PolicyConfig):
        return spec
    return PolicyConfig(model_name_or_path=str(spec), device=device, cpu_threads=cpu_threads)


def generator_pool(
    generators: Mapping[str, str | Path | PolicyConfig] | Sequence[str | Path | PolicyConfig],
    device: str = "auto",
    cpu_threads: int | None = None,
) -> dict[str, PolicyConfig]:
    """Name -> policy. A list is named by each directory's last path part."""
    if isinstance(generators, Mapping):
        return {str(k): _as_policy(v, device, cpu_threads) for k, v in generators.items()}
    pool: dict[str, PolicyConfig] = {}
    for spec in generators:
        cfg = _as_policy(spec, device, cpu_threads)
        name = Path(str(cfg.model_name_or_path)).name or str(cfg.model_name_or_path)
        if name in pool:
            raise ValueError(f"two generators are both named {name!r}; pass a dict of name -> path instead")
        pool[name] = cfg
    return pool


def _score(fn: ScoreFn | None, contexts: list[list[dict]], responses: list[str], name: str) -> list[float | None]:
    if fn is None or not responses:
        return [None] * len(responses)
    scores = np.asarray(fn(contexts, responses), dtype=np.float64).reshape(-1)
    if len(scores) != len(responses):
        raise ValueError(f"{name} returned {len(scores)} scores for {len(responses)} responses")
    return [None if not np.isfinite(s) else float(s) for s in scores]


def generate_candidates(
    prompts: pl.DataFrame,
    generators: Mapping[str, str | Path | PolicyConfig] | Sequence[str | Path | PolicyConfig],
    score_fn: ScoreFn,
    continue_fn: ScoreFn | None = None,
    cfg: CandidateConfig | None = None,
) -> CandidateResult:
    """Sample, score and describe candidates for every valid prompt from every generator.

    `prompts` follows schema.PROMPTS (prompt_id, system, history, day are read). Contexts handed to the
    scorers are chat messages: the system card (when set) followed by the history. A non-finite score is
    stored as null so downstream builders can drop it with a reason.
    """
    cfg = cfg or CandidateConfig()
    pool = generator_pool(generators, cfg.device, cfg.cpu_threads)
    if not pool:
        raise ValueError("no generators given; pass at least one policy directory")
    usable, drops = valid_prompts(prompts, STAGE)
    if usable.is_empty():
        stats = {"generators": {}, "rows": 0, "prompts_dropped": drops.height, "tokens_per_s": None}
        return CandidateResult(frame=schema.empty(CANDIDATES), drops=drops, stats=stats)
    rows = usable.select("system", "history").iter_rows(named=True)
    contexts = [chat_messages(r["system"], r["history"]) for r in rows]
    ids = usable["prompt_id"].to_list()
    frames, stats = [], {}
    for name, policy in pool.items():
        texts, n_tokens, gen_stats = sample_replies(policy, contexts, cfg)
        flat_ctx = [c for c, ts in zip(contexts, texts, strict=True) for _ in ts]
        flat_txt = [t for ts in texts for t in ts]
        rm = _score(score_fn, flat_ctx, flat_txt, "score_fn")
        pc = _score(continue_fn, flat_ctx, flat_txt, "continue_fn")
        style = [style_features(t) for t in flat_txt]
        frames.append(
            pl.DataFrame(
                {
                    "prompt_id": [p for p, ts in zip(ids, texts, strict=True) for _ in ts],
                    "generator": [name] * len(flat_txt),
                    "sample_idx": [i for ts in texts for i in range(len(ts))],
                    "text": flat_txt,
                    "rm_pointwise": rm,
                    "p_continue": pc,
                    "n_chars": [s["n_chars"] for s in style],
                    "n_emoji": [s["n_emoji"] for s in style],
                    "has_list": [s["has_list"] for s in style],
                    "n_tokens": [n for ns in n_tokens for n in ns],
                    "ended": ended_flags([n for ns in n_tokens for n in ns], cfg.max_new_tokens),
                },
                schema_overrides={"rm_pointwise": pl.Float64, "p_continue": pl.Float64, "ended": pl.Boolean},
            )
        )
        stats[name] = gen_stats
    frame = schema.conform(pl.concat(frames), CANDIDATES) if frames else schema.empty(CANDIDATES)
    total_tokens = sum(s["gen_tokens"] for s in stats.values())
    total_s = sum(s["gen_seconds"] for s in stats.values())
    summary = {
        "generators": stats,
        "rows": frame.height,
        "prompts_dropped": drops.height,
        "tokens_per_s": round(total_tokens / total_s, 1) if total_s > 0 else None,
    }
    return CandidateResult(frame=frame, drops=drops, stats=summary)
