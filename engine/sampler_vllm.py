"""vLLM on a GPU: paged attention and continuous batching over the whole call's prompts.

Prompts go in as token ids, so vLLM reads exactly the prompt the other engines read (the same fitting to the
budget, the same chat template). The random stream is vLLM's per-request seed: `reseed` sets a base and each
call after it takes the next seed, so a segment's replies do not depend on what was sampled before it, as with
the other engines. The engine holds `vllm_gpu_memory_utilization` of the card, leaving the rest to the trainer
or the reward model that shares it.
"""

from __future__ import annotations

from engine.policy import PolicyConfig
from engine.sampler import eos_of, generation_config, trim_at_end, weights_digest


class VllmSampler:
    name = "vllm"

    def __init__(self, policy: PolicyConfig, settings, device) -> None:
        from vllm import LLM

        dtype = "auto" if policy.dtype == "auto" else policy.dtype
        self.llm = LLM(
            model=policy.model_name_or_path,
            tokenizer=policy.model_name_or_path,
            dtype=dtype,
            seed=settings.seed,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            trust_remote_code=policy.trust_remote_code,
            enable_prefix_caching=True,
        )
        self.weights_digest = weights_digest(policy)
        self.eos_token_ids = eos_of(generation_config(policy.model_name_or_path, policy.trust_remote_code))
        self.seed, self.calls = settings.seed, 0

    def reseed(self, seed: int) -> None:
        self.seed, self.calls = seed, 0

    def generate(self, prompts: list[list[int]], settings, end_ids: list[int]) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            n=settings.num_samples,
            temperature=0.0 if settings.greedy else settings.temperature,
            top_p=1.0 if settings.greedy else settings.top_p,
            top_k=-1 if settings.greedy or settings.top_k == 0 else settings.top_k,
            max_tokens=settings.max_new_tokens,
            stop_token_ids=sorted(end_ids),
            seed=self.seed + self.calls,
        )
        self.calls += 1
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        rows = []
        for request in outputs:
            for completion in request.outputs:
                ids = list(completion.token_ids)
                # a reply ended by a stop token carries it, as the other engines' do
                if isinstance(completion.stop_reason, int) and (not ids or ids[-1] != completion.stop_reason):
                    ids.append(completion.stop_reason)
                rows.append(ids)
        return trim_at_end(rows, set(end_ids))

    def close(self) -> None:
        del self.llm
        import torch

        torch.cuda.empty_cache()
