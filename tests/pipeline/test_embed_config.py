"""The embedding config: what `backend`='auto' resolves to on a CPU and on a GPU, and refused settings."""

from __future__ import annotations

import pytest
import torch

from pipeline import embed_config
from pipeline.embed_config import CPU_BACKEND, DEFAULT_MODEL, EmbedConfig

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU default; this machine has a GPU")


@cpu_only
def test_the_default_on_a_cpu_is_the_batch_independent_int8_backend():
    cfg = EmbedConfig()
    assert cfg.backend == CPU_BACKEND == "onnx-int8-pertext"
    assert cfg.model_id == f"{DEFAULT_MODEL}|onnx-int8-pertext"
    assert cfg.resolved_precision() == "fp32" and cfg.resolved_devices() == ["cpu"]
    assert cfg == EmbedConfig(backend=CPU_BACKEND)  # "auto" is resolved when the config is made


def test_the_default_on_a_gpu_stays_torch_fp16(monkeypatch):
    monkeypatch.setattr(embed_config, "resolve_device", lambda device: "cuda:0")
    cfg = EmbedConfig()
    assert cfg.backend == "torch" and cfg.resolved_precision() == "fp16"
    assert cfg.model_id == f"{DEFAULT_MODEL}|torch|fp16"
    assert cfg.resolved_batch_size() == cfg.gpu_batch_size


@cpu_only
def test_a_device_pool_asks_for_torch_and_the_others_stay_selectable():
    assert EmbedConfig(devices="cpu,cpu").backend == "torch"
    for backend in ("torch", "onnx", "onnx-int8", "onnx-int8-pertext"):
        cfg = EmbedConfig(backend=backend)
        assert cfg.backend == backend and cfg.model_id.endswith(f"|{backend}")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"backend": "onnx-int8-pertext", "device": "cuda"},
            r"`backend`='onnx-int8-pertext' runs on the CPU only.*'auto'",
        ),
        ({"backend": "onnx", "precision": "fp16"}, r"`precision`='fp16' applies to the torch backend"),
        ({"backend": "int8"}, r"`backend`='int8' is unknown: use one of \['auto', 'torch'"),
        ({"backend": "onnx-int8-pertext", "devices": "cpu,cpu"}, r"`devices`.*`backend`='torch'"),
    ],
)
def test_bad_settings_name_the_setting_and_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmbedConfig(**kwargs)
