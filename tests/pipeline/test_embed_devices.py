"""Embeddings on several devices and in fp16: the same batches, so the same vectors, on any number of devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.embed_config import EmbedConfig
from pipeline.embedder import Embedder
from tests.pipeline.chitchat_texts import conversations

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")
needs_two_gpus = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs two or more CUDA GPUs to share batches over"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real chat messages of many lengths (BYU Chit-Chat from the chitchat-dataset package), with repeats."""
    out: list[str] = []
    for messages in conversations():
        out += messages
        if len(out) >= 60:
            break
    return out[:60] + out[:5] + [""]


def test_two_processes_give_the_vectors_of_one(model_dir, texts, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = {"model_dir": str(model_dir), "progress": False, "batch_size": 8, "device": "cpu", "backend": "torch"}
    one = Embedder(EmbedConfig(**common))
    pool = Embedder(EmbedConfig(**common, devices="cpu,cpu"))
    try:
        assert one.devices == ["cpu"] and pool.devices == ["cpu", "cpu"]
        assert pool.model_id == one.model_id  # the same vectors, so the same cache entries
        single, shared = one.encode(texts), pool.encode(texts)
    finally:
        pool.close()
    assert shared.dtype == np.float32 and shared.shape == (len(texts), 384)
    np.testing.assert_array_equal(shared, single)
    # and in input order: each row is its own text's vector as sentence-transformers makes it alone
    reference = one._st.encode(texts[:3], normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(single[:3], reference, atol=1e-5)
    np.testing.assert_array_equal(single[60:65], single[:5])


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"precision": "int4"}, "precision"),
        ({"devices": "gpu0,gpu1"}, "devices"),
        ({"devices": "cpu,cpu", "backend": "onnx"}, "devices"),
        ({"gpu_batch_size": 0}, "gpu_batch_size"),
    ],
)
def test_bad_device_settings_name_the_setting(kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        EmbedConfig(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback; this machine has a GPU")
def test_on_cpu_vectors_are_fp32_with_cpu_batches_and_fp16_is_refused():
    cfg = EmbedConfig(device="auto", backend="torch")
    assert cfg.resolved_precision() == "fp32" and cfg.resolved_batch_size() == cfg.batch_size
    assert cfg.resolved_devices() == ["cpu"] and cfg.model_id.endswith("|torch")
    with pytest.raises(ValueError, match="precision.*CUDA"):
        EmbedConfig(device="cpu", backend="torch", precision="fp16").resolved_precision()


@needs_cuda
def test_cuda_embeds_in_fp16_close_to_fp32(model_dir, texts, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fast = Embedder(EmbedConfig(model_dir=str(model_dir), progress=False, device="cuda:0"))
    exact = Embedder(EmbedConfig(model_dir=str(model_dir), progress=False, device="cuda:0", precision="fp32"))
    assert fast.model_id.endswith("|fp16") and fast.batch_size == fast.config.gpu_batch_size
    a, b = fast.encode(texts), exact.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.999


@needs_two_gpus
def test_every_gpu_gives_the_vectors_of_one(model_dir, texts, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = {"model_dir": str(model_dir), "progress": False, "gpu_batch_size": 8}
    one = Embedder(EmbedConfig(**common, device="cuda:0"))
    every = Embedder(EmbedConfig(**common, device="cuda"))
    try:
        assert len(every.devices) == torch.cuda.device_count()
        np.testing.assert_array_equal(every.encode(texts), one.encode(texts))
    finally:
        every.close()
