import json

import pytest
import torch

from engine.policy import PolicyConfig, load_tokenizer
from engine.sampler import local_folder, policy_backend, resolve_backend, rollout_backend, trim_at_end, weights_digest
from engine.sampling import CandidateConfig, fit_prompt, open_sampler, sample_replies
from tests.training.tiny_policy import one_cpu_thread, tiny_policy_dir  # noqa: F401

PROMPTS = [[{"role": "user", "content": f"tell me about {t}"}] for t in ("cats", "rain", "chess", "the beach", "music")]


def _prompt_ids(policy: PolicyConfig) -> list[list[int]]:
    tok = load_tokenizer(policy)
    return [fit_prompt(tok, m, 64) for m in PROMPTS]


def _greedy(backend: str, policy: PolicyConfig, **kw) -> list[list[int]]:
    cfg = CandidateConfig(num_samples=1, max_new_tokens=16, greedy=True, device="cpu", backend=backend, **kw)
    sampler = open_sampler(policy, cfg, torch.device("cpu"))
    try:
        # no end token: every reply runs the full length, so every position is compared
        return sampler.generate(_prompt_ids(policy), cfg, [])
    finally:
        sampler.close()


def test_ctranslate2_float32_is_hf_fp32_token_for_token():
    pytest.importorskip("ctranslate2")
    policy = PolicyConfig(model_name_or_path=tiny_policy_dir(), dtype="float32")
    reference = _greedy("hf", policy)
    assert all(len(r) == 16 for r in reference)
    assert _greedy("ctranslate2", policy) == reference
    # int8 arithmetic runs and stays in the vocabulary; its quality is the bench's to judge
    quantized = _greedy("ctranslate2", policy, ct2_compute_type="int8_float32")
    assert [len(r) for r in quantized] == [16] * len(PROMPTS)
    assert max(max(r) for r in quantized) < len(load_tokenizer(policy))


@pytest.mark.parametrize("backend", ["hf", "ctranslate2"])
def test_every_cpu_engine_samples_seeded_replies_with_the_weights_digest(backend):
    if backend == "ctranslate2":
        pytest.importorskip("ctranslate2")
    policy = PolicyConfig(model_name_or_path=tiny_policy_dir())
    cfg = CandidateConfig(num_samples=3, max_new_tokens=12, batch_size=2, device="cpu", seed=5, backend=backend)
    texts, n_tokens, stats = sample_replies(policy, PROMPTS, cfg)
    again, _, _ = sample_replies(policy, PROMPTS, cfg)
    assert texts == again and len(texts) == len(PROMPTS) and all(len(t) == 3 for t in texts)
    assert all(1 <= n <= 12 for ns in n_tokens for n in ns)
    assert len({t for ts in texts for t in ts}) > 1  # sampled, not one reply repeated
    assert stats["backend"] == backend and stats["weights_digest"] == weights_digest(policy)


def test_the_conversion_is_kept_beside_the_checkpoint_by_its_digest(tmp_path):
    pytest.importorskip("ctranslate2")
    import shutil

    from engine.sampler_ct2 import MANIFEST, converted

    folder = tmp_path / "gen1"
    shutil.copytree(tiny_policy_dir(), folder)
    policy = PolicyConfig(model_name_or_path=str(folder))
    before = weights_digest(policy)
    target = converted(policy)
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["weights_digest"] == before and not manifest["merged_lora"]
    assert target.parent == tmp_path / ".engines" and weights_digest(policy) == before  # hidden: digest unmoved
    assert converted(policy) == target  # reused
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert converted(policy) != target  # other bytes, other conversion


def test_adapter_only_checkpoint_is_served_merged(tmp_path):
    pytest.importorskip("ctranslate2")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_policy_dir())
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    load_tokenizer(PolicyConfig(model_name_or_path=tiny_policy_dir())).save_pretrained(adapter)
    merged = tmp_path / "merged"
    model.merge_and_unload().save_pretrained(merged)
    load_tokenizer(PolicyConfig(model_name_or_path=tiny_policy_dir())).save_pretrained(merged)
    from engine.sampler_ct2 import MANIFEST, converted

    assert json.loads((converted(PolicyConfig(model_name_or_path=str(adapter))) / MANIFEST).read_text())["merged_lora"]
    served = _greedy("ctranslate2", PolicyConfig(model_name_or_path=str(adapter)))
    assert served == _greedy("hf", PolicyConfig(model_name_or_path=str(merged), dtype="float32"))


def test_settings_fail_fast_naming_the_setting():
    policy = PolicyConfig(model_name_or_path=tiny_policy_dir())
    with pytest.raises(ValueError, match="`backend`"):
        CandidateConfig(backend="onnx")
    with pytest.raises(ValueError, match="`ct2_compute_type`"):
        CandidateConfig(ct2_compute_type="int4")
    with pytest.raises(ValueError, match="`vllm_gpu_memory_utilization`"):
        CandidateConfig(vllm_gpu_memory_utilization=0)
    with pytest.raises(ValueError, match="vllm.*`backend`"):
        resolve_backend("vllm", "cpu", policy)
    with pytest.raises(ValueError, match="`model_name_or_path`"):
        resolve_backend("ctranslate2", "cpu", PolicyConfig(model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct"))
    with pytest.raises(ValueError, match="`rollout_backend`"):
        rollout_backend("vllm", "cpu")
    with pytest.raises(ValueError, match="`rollout_backend`"):
        rollout_backend("ctranslate2", "cpu")


def test_auto_picks_by_device_and_checkpoint(monkeypatch):
    import engine.sampler as sampler

    policy = PolicyConfig(model_name_or_path=tiny_policy_dir())
    hub = PolicyConfig(model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    monkeypatch.setattr(sampler, "installed", lambda module: True)
    assert resolve_backend("auto", "cpu", policy) == "ctranslate2"
    assert resolve_backend("auto", "cpu", hub) == "hf"  # nothing local to convert
    assert resolve_backend("auto", "cuda", policy) == "vllm"
    assert rollout_backend("auto", "cuda") == "vllm" and rollout_backend("auto", "cpu") == "hf"
    monkeypatch.setattr(sampler, "installed", lambda module: False)
    assert resolve_backend("auto", "cpu", policy) == "hf" and resolve_backend("auto", "cuda", policy) == "hf"
    assert local_folder(PolicyConfig(model_name_or_path=tiny_policy_dir(), gguf_file="x.gguf")) is None
    assert policy_backend(None) == "hf" and policy_backend("smollm2") == "auto"


def test_replies_end_at_their_first_end_token():
    assert trim_at_end([[5, 6, 2, 0, 0], [5, 6, 7], [2]], {2}) == [[5, 6, 2], [5, 6, 7], [2]]
