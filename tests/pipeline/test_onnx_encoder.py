"""The default CPU backend (int8, one text per pass): a text's vector is the same in any batch, order or
thread count, and close to torch fp32's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.embed import embed_with_stats
from pipeline.embed_config import CPU_BACKEND, EmbedConfig
from pipeline.embedder import Embedder
from pipeline.embedding_cache import EmbeddingCache
from tests.pipeline.chitchat_texts import conversations


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def pertext(model_dir) -> Embedder:
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield Embedder(EmbedConfig(model_dir=str(model_dir), progress=False, device="cpu", num_threads=2))
    mp.undo()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real chat messages of many lengths (BYU Chit-Chat from the chitchat-dataset package), one empty."""
    out: list[str] = []
    for messages in conversations():
        out += [m for m in messages if m not in out]
        if len(out) >= 40:
            break
    return out[:40] + [""]


def test_the_default_cpu_embedder_is_per_text(pertext):
    assert pertext.config.backend == CPU_BACKEND and pertext.model_id.endswith("|onnx-int8-pertext")
    assert pertext._onnx.per_text and pertext._onnx.workers == 2


def test_a_vector_does_not_depend_on_its_batch(pertext, texts, model_dir):
    together = pertext.encode(texts)
    assert together.shape == (len(texts), 384) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    longest = sorted(texts, key=len)[-3:]
    alone = np.concatenate([pertext.encode([t]) for t in texts])
    reversed_ = pertext.encode(texts[::-1])[::-1]
    beside = pertext.encode([*longest, *texts, *longest])[3:-3]
    one_thread = Embedder(EmbedConfig(model_dir=str(model_dir), progress=False, device="cpu", num_threads=1))
    for other in (alone, reversed_, beside, one_thread.encode(texts)):
        np.testing.assert_array_equal(other, together)  # bit for bit


def test_close_to_torch_fp32(pertext, texts, model_dir):
    torch_fp32 = Embedder(EmbedConfig(model_dir=str(model_dir), progress=False, device="cpu", backend="torch"))
    cos = (pertext.encode(texts) * torch_fp32.encode(texts)).sum(axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())


def test_cached_vectors_are_the_encoded_ones(pertext, texts, tmp_path):
    cache = EmbeddingCache(tmp_path, pertext.model_id)
    first, s1 = embed_with_stats(texts[:20], cache=cache, embedder=pertext)
    again, s2 = embed_with_stats(texts, cache=cache, embedder=pertext)
    assert s1.encoded == 20 and s2.cache_hits == 20 and s2.encoded == len(texts) - 20
    np.testing.assert_array_equal(again, pertext.encode(texts))
    np.testing.assert_array_equal(again[:20], first)


def test_an_export_is_written_once_when_two_loaders_race(tmp_path):
    """Two loaders of one model at once: the second waits for the first one's file instead of writing beside it."""
    import threading
    import time

    from pipeline.onnx_encoder import _atomic_export

    calls = []

    def write(tmp: Path) -> None:
        calls.append(tmp)
        time.sleep(0.3)
        tmp.write_bytes(b"model")

    target = tmp_path / "export" / "model-int8.onnx"
    threads = [threading.Thread(target=_atomic_export, args=(target, write)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and target.read_bytes() == b"model"
    assert [p.name for p in target.parent.iterdir() if p.suffix == ".onnx"] == ["model-int8.onnx"]
