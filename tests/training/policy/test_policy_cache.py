import json
from dataclasses import replace

import torch
from safetensors.torch import load_file

from training.policy.models import TinyLlamaConfig
from training.policy.policy_cache import cache_key, cached_tiny_policy, default_cache_root

CFG = TinyLlamaConfig(
    vocab_size=320,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
    pretrain_steps=3,
    pretrain_batch_size=2,
    pretrain_seq_len=16,
    max_position_embeddings=32,
    cpu_threads=1,
)
CORPUS = [f"hello there number {i}, how are you today?" for i in range(40)]


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_the_second_home_copies_the_policy_the_first_one_pretrained(tmp_path):
    first, pretrained = cached_tiny_policy(CORPUS, tmp_path / "home-a", CFG, tmp_path / "cache")
    again, pretrained_again = cached_tiny_policy(CORPUS, tmp_path / "home-b", CFG, tmp_path / "cache")
    assert pretrained and not pretrained_again
    assert first["cache_key"] == again["cache_key"] and again["path"] == str(tmp_path / "home-b")
    a, b = _weights(tmp_path / "home-a"), _weights(tmp_path / "home-b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "home-b" / "policy_manifest.json").read_text())["pretrained_here"] is False


def test_the_key_follows_the_corpus_and_the_weights_settings_only():
    key = cache_key(CORPUS, CFG)
    assert cache_key(CORPUS, replace(CFG, device="cpu", cpu_threads=2)) == key
    assert cache_key(CORPUS[:-1], CFG) != key
    assert cache_key(CORPUS, replace(CFG, pretrain_steps=4)) != key
    assert cache_key(CORPUS, replace(CFG, seed=1)) != key


def test_a_failed_build_leaves_no_cached_entry(tmp_path):
    bad = replace(CFG)
    try:
        cached_tiny_policy([], tmp_path / "home", bad, tmp_path / "cache")
    except ValueError as err:
        assert "corpus is empty" in str(err)
    entries = list((tmp_path / "cache" / "policies").iterdir())
    assert [e for e in entries if not e.name.endswith(".lock")] == []


def test_the_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_CACHE", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c"
    monkeypatch.delenv("FLYWHEEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "characterflywheel"
