"""Greedy replies kept by the weights that wrote them.

A greedy reply depends only on the weights, the engine, its settings and the prompt. In a flywheel each policy
answers the held-out IFEval prompts twice: as the new generation, then as the next generation's parent; on a
CPU those replies (up to 320 tokens each) are the costliest part of a real model's evaluation. So they are kept
in a folder under a key of everything they depend on, and a second evaluation of the same weights on the same
prompts reads them back instead of sampling again. A policy given by hub name (no local folder to digest) is
never kept.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from engine.policy import PolicyConfig
from engine.sampler import resolve_backend, weights_digest
from pipeline.device import resolve_device
from pipeline.digest import digest
from pipeline.lake import atomic_write_parquet

# the libraries whose arithmetic a greedy reply depends on
_LIBRARIES = ("torch", "transformers", "ctranslate2", "vllm")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def reply_key(policy: str, contexts: list[list[dict]], settings: dict[str, Any]) -> str | None:
    """The key of `policy`'s greedy replies to `contexts` under `settings` (the sampling settings: engine, device,
    lengths); None when the policy has no local folder to digest."""
    weights = weights_digest(PolicyConfig(model_name_or_path=policy))
    if weights is None:
        return None
    device = resolve_device(settings.get("device", "auto"))
    engine = resolve_backend(settings.get("backend", "auto"), device.type, PolicyConfig(model_name_or_path=policy))
    versions = {name: _version(name) for name in _LIBRARIES}
    return digest(weights, engine, device.type, settings, versions, contexts)[:32]


def read_replies(folder: str | Path, key: str, n: int) -> tuple[list[str], list[int]] | None:
    """The kept replies under `key` (texts, token counts), or None when there are none for `n` prompts."""
    path = Path(folder) / f"{key}.parquet"
    if not path.is_file():
        return None
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError):
        return None  # a torn or foreign file: sample again, and it is rewritten
    if frame.height != n or frame["position"].to_list() != list(range(n)):
        return None
    return frame["response"].to_list(), frame["n_tokens"].to_list()


def keep_replies(folder: str | Path, key: str, replies: list[str], n_tokens: list[int]) -> Path:
    """Write the replies under `key`, atomically."""
    frame = pl.DataFrame(
        {"position": list(range(len(replies))), "response": replies, "n_tokens": n_tokens},
        schema={"position": pl.Int64, "response": pl.Utf8, "n_tokens": pl.Int64},
    )
    return atomic_write_parquet(Path(folder) / f"{key}.parquet", frame)
