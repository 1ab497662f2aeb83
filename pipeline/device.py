"""Where training and generation run: CUDA when present, else CPU.

One place decides, so every stage (pre-training, candidates, SFT/DPO/GRPO) agrees and the same code runs
unchanged on a laptop and on a GPU box.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when torch sees a GPU, else CPU; `cuda` without a GPU is a configuration error.

    Under accelerate or torchrun (LOCAL_RANK set) `auto` and `cuda` mean this process's own GPU, so N ranks
    load N copies onto N cards instead of all onto the first.
    """
    if device not in DEVICE_CHOICES and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"device={device!r} is not one of {DEVICE_CHOICES} or 'cuda:N'; set `device` to one of them")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no GPU; set `device` to 'auto' or 'cpu'")
    if device == "cuda" and os.environ.get("LOCAL_RANK", "").isdigit():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(device)


def trainer_device_kwargs(device: str = "auto") -> dict[str, Any]:
    """Keyword arguments for a TRL/transformers training config on the resolved device.

    On CPU bf16 autocast is slower than fp32 for tiny models and TRL defaults bf16 to True, so it is turned off
    explicitly; on a GPU bf16 is used where the card supports it.
    """
    dev = resolve_device(device)
    if dev.type == "cpu":
        return {"use_cpu": True, "bf16": False, "fp16": False}
    return {"use_cpu": False, "bf16": bf16_ok(dev), "fp16": False}


def bf16_ok(device: torch.device) -> bool:
    """Whether `device` computes in bf16 at full speed (CUDA cards from Ampere on); never on CPU here."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def inference_dtype(device: torch.device) -> str:
    """Weights dtype for generation: bf16 on cards that support it (half the memory traffic per token), else
    the checkpoint's own ('auto')."""
    return "bfloat16" if bf16_ok(device) else "auto"


def inference_autocast(device: torch.device):
    """bf16 autocast for scoring on a GPU, leaving the weights (and what is saved from them) in float32."""
    if bf16_ok(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe_device(device: str = "auto") -> str:
    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu:{torch.get_num_threads()}threads"


def policy_cpu_threads(policy_model: str | None) -> int | None:
    """torch CPU threads for the policy: one for the tiny built-in policy (no `policy_model` configured: a model
    this small spends a second thread waiting on the first, and spins on a busy machine), torch's default for
    a configured model."""
    return None if policy_model else 1


def set_cpu_threads(threads: int | None) -> None:
    """Fix torch's intra-op CPU threads. Tiny models gain little from more threads and lose a lot when the
    cores are shared with other work (threads spin waiting for each other), so callers may pin them."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"cpu_threads={threads} must be >= 1 or None")
    torch.set_num_threads(threads)
