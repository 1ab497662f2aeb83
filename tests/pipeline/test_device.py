"""Device rules: one GPU per rank under a launcher, bf16 where the card has it, nothing changes on CPU."""

import contextlib

import pytest
import torch

from pipeline.device import bf16_ok, inference_autocast, inference_dtype, resolve_device, trainer_device_kwargs

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")


def test_cpu_keeps_the_checkpoint_dtype_and_float32_scoring(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    cpu = resolve_device("cpu")
    assert cpu == torch.device("cpu") and not bf16_ok(cpu)
    assert inference_dtype(cpu) == "auto"
    assert isinstance(inference_autocast(cpu), contextlib.nullcontext)
    assert trainer_device_kwargs("cpu")["bf16"] is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback; this machine has a GPU")
def test_auto_is_the_cpu_without_a_gpu_even_under_a_launcher(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("cuda")


@needs_cuda
def test_each_rank_gets_its_own_gpu_and_bf16(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count() - 1))
    dev = resolve_device("auto")
    assert dev == torch.device("cuda", torch.cuda.device_count() - 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # an explicit card stays explicit
    if torch.cuda.is_bf16_supported():
        assert inference_dtype(dev) == "bfloat16" and trainer_device_kwargs("cuda")["bf16"] is True
        with inference_autocast(dev):
            assert (torch.ones(4, 4, device=dev) @ torch.ones(4, 4, device=dev)).dtype == torch.bfloat16


def test_the_tiny_built_in_policy_runs_on_one_cpu_thread():
    from pipeline.device import policy_cpu_threads

    assert policy_cpu_threads(None) == 1 and policy_cpu_threads("") == 1
    assert policy_cpu_threads("HuggingFaceTB/SmolLM2-135M-Instruct") is None
