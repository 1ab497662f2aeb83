"""The one interface every sampling engine offers, and which engine a configuration names.

As nanochat keeps one engine below its training and its evaluation, candidates, the offline evaluation (and so
the A/B readout, which replays its replies) and the benches sample through one `Sampler`: it takes prompt token
ids and returns reply token ids, so tokenizing, fitting prompts to their budget and decoding stay in
`engine.sampling`, the same for every engine. Engines:

- `hf`: Hugging Face `generate`, the reference;
- `ctranslate2`: CTranslate2 on the checkpoint converted once (`engine.sampler_ct2`), fp32 by default, which
  gives HF fp32's greedy output token for token;
- `vllm`: vLLM on a GPU (`engine.sampler_vllm`).

`auto` picks vLLM where a GPU and vLLM are present, else HF on a GPU; on a CPU CTranslate2 where it is installed
and the checkpoint is a local folder, else HF. Each engine records the digest of the weights it serves.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

BACKENDS = ("auto", "hf", "ctranslate2", "vllm")
CT2_COMPUTE_TYPES = ("float32", "int8_float32", "int8")


class Sampler(Protocol):
    """A loaded policy that continues token prompts."""

    name: str
    weights_digest: str | None
    eos_token_ids: list[int]  # the checkpoint's own end tokens (its generation config)

    def generate(self, prompts: list[list[int]], settings, end_ids: list[int]) -> list[list[int]]:
        """`settings.num_samples` replies per prompt (prompt i's at rows i*n .. i*n+n-1), each the generated ids up
        to and including the first of `end_ids`, or `settings.max_new_tokens` ids when none came. `settings` is a
        `CandidateConfig`; the random stream restarts at `reseed`."""
        ...

    def reseed(self, seed: int) -> None: ...

    def close(self) -> None: ...


def policy_backend(policy_model: str | None) -> str:
    """The engine a flywheel samples its policy with: 'hf' for the tiny built-in policy (no `policy_model`), whose
    published flywheel figures are Hugging Face's random draws, which another engine's draws of the same
    distribution would not repeat; 'auto' for a configured model."""
    return "auto" if policy_model else "hf"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def local_folder(policy) -> Path | None:
    """The policy's checkpoint folder when it is a local Hugging Face folder (not a hub name, not a GGUF file)."""
    path = policy.model_name_or_path
    if path is None or policy.gguf_file or not Path(path).is_dir():
        return None
    return Path(path)


def weights_digest(policy) -> str | None:
    """The digest of the checkpoint an engine serves: its folder's files (names and bytes) but the build manifest,
    as `training.policy.smollm2` records it; None for a hub name."""
    folder = local_folder(policy)
    if folder is None:
        return None
    from pipeline.digest import dir_digest

    return dir_digest(folder, exclude=("policy_manifest.json",))


def generation_config(path: str | Path, trust_remote_code: bool = False):
    """A checkpoint's generation config (derived from its model config when it has none)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(path))
    except OSError:
        return GenerationConfig.from_model_config(
            AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        )


def eos_of(gen) -> list[int]:
    """The end tokens a generation config names."""
    ids = gen.eos_token_id
    return [ids] if isinstance(ids, int) else list(ids or [])


def trim_at_end(rows: list[list[int]], end_ids: set[int]) -> list[list[int]]:
    """Each row up to and including its first end token (engines that pad after it, or run past it)."""
    out = []
    for row in rows:
        cut = next((i + 1 for i, t in enumerate(row) if t in end_ids), len(row))
        out.append(list(row[:cut]))
    return out


def resolve_backend(backend: str, device_type: str, policy) -> str:
    """The engine `backend` names on a device of `device_type` ('cpu' or 'cuda') for `policy` (a `PolicyConfig`);
    a named engine that cannot run here is a configuration error naming the setting and its fix."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}; set `backend` to one of them")
    local = local_folder(policy) is not None
    if backend == "auto":
        if device_type == "cuda":
            return "vllm" if installed("vllm") else "hf"
        return "ctranslate2" if installed("ctranslate2") and local else "hf"
    if backend == "vllm":
        if device_type != "cuda":
            raise ValueError("backend='vllm' samples on a GPU and none is used here; set `backend` to 'auto' or 'hf'")
        if not installed("vllm"):
            raise ValueError("backend='vllm' but vLLM is not installed; `pip install vllm` or set `backend` to 'hf'")
    if backend == "ctranslate2":
        if not installed("ctranslate2"):
            raise ValueError(
                "backend='ctranslate2' but CTranslate2 is not installed; `make install` brings it, "
                "or set `backend` to 'hf'"
            )
        if device_type != "cpu":
            raise ValueError(
                "backend='ctranslate2' is used on the CPU here; set `backend` to 'auto' or 'vllm' on a GPU"
            )
        if not local:
            raise ValueError(
                f"backend='ctranslate2' converts a local Hugging Face folder, and {policy.model_name_or_path!r} "
                f"(gguf_file={policy.gguf_file!r}) is none; point `model_name_or_path` at a folder or set `backend` "
                "to 'hf'"
            )
    return backend


ROLLOUT_BACKENDS = ("auto", "hf", "vllm")


def rollout_backend(backend: str, device_type: str) -> str:
    """The engine of GRPO's rollouts, which must follow the trainer's weights as they change: vLLM colocated with
    the trainer on a GPU (TRL moves the new weights into it each step), else the trainer's own `generate`. An
    engine that loads a converted checkpoint (CTranslate2) cannot follow them, so on a CPU rollouts stay 'hf'."""
    if backend not in ROLLOUT_BACKENDS:
        raise ValueError(
            f"rollout_backend={backend!r} is not one of {ROLLOUT_BACKENDS}; set `rollout_backend` to one of them"
        )
    if backend == "auto":
        return "vllm" if device_type == "cuda" and installed("vllm") else "hf"
    if backend == "vllm" and (device_type != "cuda" or not installed("vllm")):
        raise ValueError(
            "rollout_backend='vllm' needs a GPU and vLLM installed; set `rollout_backend` to 'auto' or 'hf'"
        )
    return backend
