"""The reference engine: Hugging Face `generate` on the policy as transformers loads it.

Batches are left-padded, so a batch's prompts end together and the first step reads them all at once; the
policy is loaded in bf16 on GPUs that support it, as trained weights are served there.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from engine.policy import PolicyConfig, load_model
from engine.sampler import trim_at_end, weights_digest
from pipeline.device import inference_dtype


class HfSampler:
    name = "hf"

    def __init__(self, policy: PolicyConfig, device: torch.device) -> None:
        if policy.dtype == "auto":
            policy = replace(policy, dtype=inference_dtype(device))
        self.device = device
        self.model = load_model(policy, device).eval()
        self.weights_digest = weights_digest(policy)
        ids = self.model.generation_config.eos_token_id
        self.eos_token_ids = [ids] if isinstance(ids, int) else list(ids or [])
        pad = self.model.generation_config.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_token_ids[0]

    def reseed(self, seed: int) -> None:
        torch.manual_seed(seed)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], settings, end_ids: list[int]) -> list[list[int]]:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampling = (
            {"do_sample": False}
            if settings.greedy
            else {
                "do_sample": True,
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "top_k": settings.top_k,
            }
        )
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            **sampling,
            max_new_tokens=settings.max_new_tokens,
            num_return_sequences=settings.num_samples,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(end_ids),
        )
        return trim_at_end(out[:, width:].tolist(), set(end_ids))

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the next generator of the pool needs the memory
