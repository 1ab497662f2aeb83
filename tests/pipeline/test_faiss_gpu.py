"""FAISS on GPUs: the CPU fallback everywhere, and GPU results equal to the CPU's where a GPU exists."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from pipeline.faiss_gpu import gpu_count, kmeans_gpu_arg, to_gpus
from pipeline.semdedup import spherical_kmeans, unit_rows

needs_faiss_gpu = pytest.mark.skipif(
    gpu_count() == 0, reason="needs faiss-gpu and a CUDA GPU (this faiss sees no GPU; `make install` picks the extra)"
)


def _unit(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    return unit_rows(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def test_without_gpus_indexes_stay_on_the_cpu_with_their_search_settings():
    x = _unit(2000)
    quantizer = faiss.IndexFlatIP(32)
    ivf = faiss.IndexIVFFlat(quantizer, 32, 16, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    ivf.add(x)
    same = to_gpus(ivf, use_gpu=False, nprobe=5)
    assert same is ivf and same.nprobe == 5
    assert gpu_count(use_gpu=False) == 0 and kmeans_gpu_arg(use_gpu=False) is False
    flat = faiss.IndexFlatIP(32)
    assert to_gpus(flat, use_gpu=False, nprobe=3) is flat  # nprobe means nothing to a flat index


@needs_faiss_gpu
def test_gpu_flat_search_returns_the_cpu_positions_and_scores():
    x, q = _unit(5000), _unit(300, seed=1)
    cpu = faiss.IndexFlatIP(32)
    cpu.add(x)
    gpu = to_gpus(faiss.IndexFlatIP(32))
    gpu.add(x)
    (s_cpu, i_cpu), (s_gpu, i_gpu) = cpu.search(q, 1), gpu.search(q, 1)
    np.testing.assert_array_equal(i_gpu, i_cpu)
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-5)


@needs_faiss_gpu
def test_gpu_ivf_search_keeps_nprobe_and_ids():
    x = _unit(20_000)
    quantizer = faiss.IndexFlatIP(32)
    cpu = faiss.IndexIVFScalarQuantizer(quantizer, 32, 64, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    cpu.train(x)
    cpu.add(x)
    gpu = to_gpus(cpu, nprobe=64)  # every list: exact, so GPU and CPU must agree
    cpu.nprobe = 64
    q = x[:500]
    (_, i_cpu), (s_gpu, i_gpu) = cpu.search(q, 1), gpu.search(q, 1)
    assert (i_gpu[:, 0] == np.arange(500)).mean() > 0.99 and (i_cpu[:, 0] == i_gpu[:, 0]).mean() > 0.99
    assert float(s_gpu.min()) > 0.99


@needs_faiss_gpu
def test_gpu_kmeans_finds_the_planted_clusters():
    centers = _unit(8, seed=2)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 8, 4000)
    x = unit_rows(centers[labels] + 0.05 * rng.standard_normal((4000, 32)).astype(np.float32))
    _, assign, sims = spherical_kmeans(x, 8, use_gpu=True)
    # each found cluster is one planted cluster
    for k in np.unique(assign):
        assert len(np.unique(labels[assign == k])) == 1
    assert float(sims.min()) > 0.9
