"""CTranslate2 on a CPU: the checkpoint converted once, its digest recorded, then batched decoding in C++.

A checkpoint folder is converted to CTranslate2's format on first use, into a hidden `.engines` folder beside it
(a folder's digest reads no hidden path, so the checkpoint's own digest does not move), named by the checkpoint's
digest: a retrained checkpoint gets a new conversion, and its `engine_manifest.json` says which weights it holds.
A checkpoint saved as a LoRA adapter alone is merged into its base first, so the engine always serves the
weights the trainer ended with.

Weights are kept in float32; `ct2_compute_type` picks the arithmetic when the model is loaded: float32 gives
HF fp32's greedy output token for token (the bench checks it), int8 trades that for speed and must pass the
bench's IFEval and repetition checks instead. Prompts of different lengths are not padded: CTranslate2 reads the
shortest prompt's length at once and the rest token by token, so each call sorts its prompts by length into
batches of `batch_size` x `num_samples` rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.policy import PolicyConfig, load_tokenizer
from engine.sampler import eos_of, generation_config, local_folder, weights_digest
from pipeline.lake import replace_dir, staging_dir

MANIFEST = "engine_manifest.json"


def _merged_adapter(folder: Path, out: Path) -> Path:
    """A plain checkpoint of an adapter-only folder: the LoRA merged into its base, saved in `out`."""
    from peft import AutoPeftModelForCausalLM

    AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype="float32").merge_and_unload().save_pretrained(out)
    # the converter writes the vocabulary from the tokenizer beside the weights
    load_tokenizer(PolicyConfig(model_name_or_path=str(folder))).save_pretrained(out)
    return out


def converted(policy: PolicyConfig) -> Path:
    """The CTranslate2 folder of `policy`'s checkpoint, converting it when no conversion of these weights exists."""
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    folder = local_folder(policy)
    if folder is None:
        raise ValueError(f"{policy.model_name_or_path!r} is not a local checkpoint folder to convert")
    digest = weights_digest(policy)
    target = folder.parent / ".engines" / f"{folder.name}-ct2-{digest[:16]}"
    if (target / MANIFEST).is_file() and json.loads((target / MANIFEST).read_text()).get("weights_digest") == digest:
        return target
    tmp = staging_dir(target)
    source = folder
    if (folder / "adapter_config.json").is_file():
        source = _merged_adapter(folder, tmp / "merged")
    out = tmp / "model"
    TransformersConverter(str(source), trust_remote_code=policy.trust_remote_code).convert(str(out), force=True)
    generation_config(source, policy.trust_remote_code).save_pretrained(tmp)
    for item in out.iterdir():
        item.rename(tmp / item.name)
    out.rmdir()
    if source != folder:
        shutil.rmtree(source)
    manifest = {
        "source": str(folder.name),
        "weights_digest": digest,
        "engine": "ctranslate2",
        "ctranslate2_version": ctranslate2.__version__,
        "weights_dtype": "float32",
        "merged_lora": source != folder,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    replace_dir(tmp, target)
    return target


class Ct2Sampler:
    name = "ctranslate2"

    def __init__(self, policy: PolicyConfig, settings) -> None:
        import torch

        self.path = converted(policy)
        # torch's thread count already follows OMP_NUM_THREADS and the machine's cores; CTranslate2's own default
        # (4) would oversubscribe a small machine
        self.threads = settings.cpu_threads or policy.cpu_threads or torch.get_num_threads()
        self.compute_type = settings.ct2_compute_type
        self.weights_digest = json.loads((self.path / MANIFEST).read_text())["weights_digest"]
        # the conversion keeps the checkpoint's generation config (an adapter-only folder has none of its own)
        self.eos_token_ids = eos_of(generation_config(self.path))
        self.tokenizer = load_tokenizer(policy)
        self.generator = None
        self.reseed(settings.seed)

    def reseed(self, seed: int) -> None:
        import ctranslate2

        # CTranslate2 seeds each worker thread's random stream once, when the thread starts: a fresh generator
        # (a new worker) is what restarts the stream
        ctranslate2.set_random_seed(seed)
        self.generator = None

    def _generator(self):
        import ctranslate2

        if self.generator is None:
            self.generator = ctranslate2.Generator(
                str(self.path),
                device="cpu",
                compute_type=self.compute_type,
                inter_threads=1,
                intra_threads=self.threads,
            )
        return self.generator

    def generate(self, prompts: list[list[int]], settings, end_ids: list[int]) -> list[list[int]]:
        n = settings.num_samples
        rows = [self.tokenizer.convert_ids_to_tokens(p) for p in prompts for _ in range(n)]
        sampling = (
            {"sampling_topk": 1}
            if settings.greedy
            else {
                "sampling_topk": settings.top_k,
                "sampling_topp": settings.top_p,
                "sampling_temperature": settings.temperature,
            }
        )
        results = self._generator().generate_batch(
            rows,
            max_batch_size=settings.batch_size * n,
            max_length=settings.max_new_tokens,
            include_prompt_in_result=False,
            end_token=sorted(end_ids),
            return_end_token=True,
            **sampling,
        )
        return [list(r.sequences_ids[0]) for r in results]

    def close(self) -> None:
        self.generator = None
