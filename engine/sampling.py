"""Sampling replies from a policy, and which prompts can be answered at all.

Candidate generation in training and offline evaluation sample through the same function and the same engine
interface (`engine.sampler`), so a policy answers a prompt alike in both whichever engine serves it: the prompt
is fitted to the token budget by cutting its oldest turns (never the system card), the engine continues the
prompt's token ids, and a reply ends at the first end-of-turn token. A prompt is answerable when its history is
non-empty and ends in a user turn.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from engine.policy import PolicyConfig, load_tokenizer
from engine.sampler import BACKENDS, CT2_COMPUTE_TYPES, resolve_backend
from pipeline import schema
from pipeline.device import describe_device, resolve_device


@dataclass
class CandidateConfig:
    """Sampling settings: replies per prompt, their length and randomness, batching and device."""

    num_samples: int = field(default=4, metadata={"help": "Replies sampled per prompt per generator."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest reply, in tokens."})
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass in (0, 1]."})
    top_k: int = field(default=50, metadata={"help": "Top-k filter; 0 disables it."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call (each yields num_samples)."})
    max_prompt_tokens: int = field(
        default=384, metadata={"help": "Oldest turns are cut until the rendered prompt fits in this many tokens."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling seed, reset for each generator."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when present), 'cpu' or 'cuda'."})
    cpu_threads: int | None = field(default=None, metadata={"help": "torch CPU threads; None keeps the default."})
    greedy: bool = field(
        default=False,
        metadata={"help": "Greedy decoding (temperature, top_p and top_k unused): what the engines' checks compare."},
    )
    backend: str = field(
        default="auto",
        metadata={
            "help": f"Sampling engine, one of {BACKENDS}: 'auto' is vLLM on a GPU where it is installed (else 'hf'), "
            "and on a CPU CTranslate2 for a local checkpoint folder (else 'hf', Hugging Face generate)."
        },
    )
    ct2_compute_type: str = field(
        default="float32",
        metadata={
            "help": f"CTranslate2 arithmetic, one of {CT2_COMPUTE_TYPES}: float32 matches HF fp32 token for token; "
            "int8 is faster and has to pass `bench/bench_sampling.py`'s quality checks to be used."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.5, metadata={"help": "Share of the GPU's memory vLLM holds, in (0, 1]."}
    )

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples={self.num_samples} must be >= 1; set `num_samples` e.g. to 4")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0; sampling needs it (e.g. 0.9)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < 0 or self.batch_size < 1 or self.max_prompt_tokens < 8:
            raise ValueError("top_k must be >= 0, batch_size >= 1 and max_prompt_tokens >= 8")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not one of {BACKENDS}; set `backend` to one of them")
        if self.ct2_compute_type not in CT2_COMPUTE_TYPES:
            raise ValueError(
                f"ct2_compute_type={self.ct2_compute_type!r} is not one of {CT2_COMPUTE_TYPES}; set "
                "`ct2_compute_type` to one of them (float32 is exact)"
            )
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(
                f"vllm_gpu_memory_utilization={self.vllm_gpu_memory_utilization} must be in (0, 1]; "
                "set `vllm_gpu_memory_utilization` e.g. to 0.5"
            )
        resolve_device(self.device)


def valid_prompts(prompts: pl.DataFrame, stage: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Prompts whose history is non-empty and ends in a user turn; the rest as DROPS rows of `stage`."""
    last_role = pl.col("history").list.last().struct.field("role")
    reason = (
        pl.when(pl.col("history").is_null() | (pl.col("history").list.len() == 0))
        .then(pl.lit("empty_history"))
        .when(last_role.is_null() | (last_role != "user"))
        .then(pl.lit("not_ending_in_user"))
        .otherwise(pl.lit(None, pl.Utf8))
    )
    tagged = prompts.with_columns(_reason=reason)
    drops = tagged.filter(pl.col("_reason").is_not_null()).select(
        pl.col("day"),
        pl.lit(stage).alias("stage"),
        pl.col("prompt_id").alias("row_id"),
        pl.col("_reason").alias("reason_code"),
        pl.lit(None, pl.Utf8).alias("kept_id"),
        pl.lit("a prompt must end with a user turn").alias("detail"),
    )
    return tagged.filter(pl.col("_reason").is_null()).drop("_reason"), schema.conform(drops, schema.DROPS)


def fit_prompt(tokenizer, messages: list[dict], max_tokens: int) -> list[int]:
    """Token ids of the generation prompt, cutting the oldest turns (never the system card) until it fits."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    while True:
        ids = tokenizer.apply_chat_template(
            system + turns, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        if len(ids) <= max_tokens or len(turns) <= 1:
            break
        turns = turns[1:]
        # Templates of real models expect a user turn first after the system card.
        while len(turns) > 1 and turns[0]["role"] != "user":
            turns = turns[1:]
    return list(ids[-max_tokens:])


def end_ids(eos_token_ids: list[int], tokenizer) -> list[int]:
    """The tokens that end a reply: the checkpoint's end tokens, the tokenizer's, and a new turn's start."""
    ids = list(eos_token_ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    # In ChatML-style templates a reply that opens a new turn has ended, even if the end token was skipped.
    turn_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    if isinstance(turn_start, int) and turn_start != tokenizer.unk_token_id:
        ids.append(turn_start)
    return sorted(set(ids))


def _batches(n: int, batch_size: int, segments: Sequence[int] | None) -> list[tuple[int, int, bool]]:
    """(start, end, reseed) of each batch; batches never straddle a segment, and each segment starts reseeded."""
    bounds = list(np.cumsum([0, *segments])) if segments is not None else [0, n]
    if bounds[-1] != n or any(b < 0 for b in (segments or [])):
        raise ValueError(f"segments {list(segments or [])} must be non-negative and sum to the {n} prompts")
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out += [(int(s), int(min(s + batch_size, hi)), s == lo) for s in range(int(lo), int(hi), batch_size)]
    return out


def open_sampler(policy: PolicyConfig, settings: CandidateConfig, device):
    """The engine `settings.backend` resolves to, loaded with `policy` (a `PolicyConfig`) on `device`."""
    name = resolve_backend(settings.backend, device.type, policy)
    if name == "ctranslate2":
        from engine.sampler_ct2 import Ct2Sampler

        return Ct2Sampler(policy, settings)
    if name == "vllm":
        from engine.sampler_vllm import VllmSampler

        return VllmSampler(policy, settings, device)
    from engine.sampler_hf import HfSampler

    return HfSampler(policy, device)


def sample_replies(
    policy: PolicyConfig,
    prompt_messages: list[list[dict]],
    cfg: CandidateConfig,
    segments: Sequence[int] | None = None,
) -> tuple[list[list[str]], list[list[int]], dict[str, Any]]:
    """`num_samples` sampled replies per prompt from one policy, with per-reply token counts and timing.

    `segments` (lengths summing to the prompt count) samples each consecutive part as if it were alone: the
    seed and the batching restart at its first prompt, so the replies to a fixed part (a benchmark suite) are
    the same whatever comes before it. Hugging Face `generate` gets `batch_size` prompts at a time; the other
    engines get a whole segment and batch it themselves."""
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(policy, padding_side="left")
    sampler = open_sampler(policy, cfg, device)
    stops = end_ids(sampler.eos_token_ids, tokenizer)
    whole = sampler.name != "hf"
    texts: list[list[str]] = []
    n_tokens: list[list[int]] = []
    gen_tokens, gen_seconds = 0, 0.0
    batches = _batches(len(prompt_messages), max(len(prompt_messages), 1) if whole else cfg.batch_size, segments)
    try:
        for start, end, reseed in batches:
            if reseed:
                sampler.reseed(cfg.seed)
            chunk = prompt_messages[start:end]
            if not chunk:
                continue
            encoded = [fit_prompt(tokenizer, m, cfg.max_prompt_tokens) for m in chunk]
            t0 = time.perf_counter()
            replies = sampler.generate(encoded, cfg, stops)
            gen_seconds += time.perf_counter() - t0
            decoded = tokenizer.batch_decode(replies, skip_special_tokens=True)
            gen_tokens += sum(len(r) for r in replies)
            for i in range(len(chunk)):
                rows = slice(i * cfg.num_samples, (i + 1) * cfg.num_samples)
                texts.append([t.strip() for t in decoded[rows]])
                n_tokens.append([len(r) for r in replies[rows]])
    finally:
        sampler.close()
    stats = {
        "prompts": len(prompt_messages),
        "samples": len(prompt_messages) * cfg.num_samples,
        "gen_tokens": gen_tokens,
        "gen_seconds": round(gen_seconds, 3),
        "tokens_per_s": round(gen_tokens / gen_seconds, 1) if gen_seconds > 0 else None,
        "device": describe_device(cfg.device),
        "backend": sampler.name,
        "weights_digest": sampler.weights_digest,
    }
    return texts, n_tokens, stats
