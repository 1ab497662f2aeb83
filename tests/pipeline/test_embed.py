"""Embeddings: the packaged model offline, the lake cache, the ONNX backends, config errors.

Most cases use the torch backend (the reference the others are measured against); the default CPU
backend has its own module (`test_onnx_encoder.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.embed import embed_texts, embed_with_stats
from pipeline.embed_config import EmbedConfig
from pipeline.embed_model import ensure_packaged_model
from pipeline.embedder import Embedder
from pipeline.embedding_cache import EmbeddingCache
from pipeline.text_hash import raw_text_hashes
from tests.pipeline.chitchat_texts import conversations


@pytest.fixture(scope="module")
def offline():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def config(model_dir, offline) -> EmbedConfig:
    return EmbedConfig(model_dir=str(model_dir), progress=False, batch_size=32, backend="torch", device="cpu")


@pytest.fixture(scope="module")
def embedder(config) -> Embedder:
    return Embedder(config)


@pytest.fixture(scope="module")
def real_sentences() -> list[str]:
    """~50 distinct real chat messages from the BYU Chit-Chat data the chitchat-dataset package ships."""
    texts: list[str] = []
    for messages in conversations():
        for msg in messages:
            t = msg.strip()
            if len(t) > 15 and t not in texts:
                texts.append(t)
        if len(texts) >= 50:
            break
    return texts[:50]


def test_default_model_loads_offline_and_gives_unit_384d_vectors(embedder, config, model_dir):
    assert embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2|torch"
    assert (model_dir / "all-MiniLM-L6-v2" / "modules.json").is_file()
    v = embed_texts(
        ["How are you doing today?", "How are you today?", "The quarterly tax filing deadline is in April."],
        embedder=embedder,
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.8
    assert v[0] @ v[1] > v[0] @ v[2] + 0.4


def test_packaged_model_is_extracted_once_without_leftovers(model_dir, embedder):
    path = ensure_packaged_model(model_dir)
    weights = path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert ensure_packaged_model(model_dir) == path
    assert weights.stat().st_mtime_ns == before
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]


def test_token_counts_are_the_widths_the_encoder_pads_to(embedder, real_sentences):
    tokenizer, limit = embedder._st.tokenizer, embedder._st.max_seq_length
    counts = embedder.token_counts([*real_sentences, "word " * 2000, None])
    assert counts[:-2] == [len(tokenizer(t)["input_ids"]) for t in real_sentences]
    assert counts[-2] == limit  # cut at the model's limit, as the encoder cuts it
    assert counts[-1] == len(tokenizer("")["input_ids"])
    assert embedder.token_counts(real_sentences, chunk=7) == counts[:-2]


def test_cache_embeds_each_distinct_text_once(tmp_path, config):
    emb = Embedder(config)  # fresh counters
    cache = EmbeddingCache(tmp_path / "embeddings", config.model_id)
    texts = ["hi there", "what's up", "hi there", None, "see you tomorrow"]
    v1, s1 = embed_with_stats(texts, cache=cache, embedder=emb)
    assert (s1.n_texts, s1.n_distinct, s1.encoded, s1.cache_hits, s1.n_missing_text) == (5, 4, 4, 0, 1)
    assert emb.texts_encoded == 4
    np.testing.assert_array_equal(v1[0], v1[2])
    assert len(cache.files()) == 1 and cache.count() == 4

    # same texts again: nothing encoded, identical vectors
    v2, s2 = embed_with_stats(pl.Series(texts), cache=cache, embedder=emb)
    assert (s2.encoded, s2.cache_hits) == (0, 4)
    assert emb.texts_encoded == 4 and emb.calls == 1
    np.testing.assert_array_equal(v1, v2)

    # a later day with one new text embeds only that text, as a new part
    v3, s3 = embed_with_stats(["see you tomorrow", "good morning"], cache=cache, embedder=emb)
    assert (s3.encoded, s3.cache_hits) == (1, 1)
    assert emb.texts_encoded == 5
    assert len(cache.files()) == 2
    np.testing.assert_array_equal(v3[0], v1[4])

    # cached vectors are the ones the model gives (not just stable)
    np.testing.assert_allclose(v3, emb.encode(["see you tomorrow", "good morning"]), atol=1e-5)


def test_cache_lookup_returns_only_requested_hashes_across_parts(tmp_path):
    cache = EmbeddingCache(tmp_path, "toy|torch")
    rng = np.random.default_rng(0)
    hashes = raw_text_hashes([f"t{i}" for i in range(10_000)])
    vecs = rng.standard_normal((10_000, 8)).astype(np.float32)
    cache.add(pl.DataFrame({"text_hash": hashes[:6000], "vector": vecs[:6000]}))
    # a concurrent writer stored an overlapping range: each hash is still returned once
    cache.add(pl.DataFrame({"text_hash": hashes[5000:], "vector": vecs[5000:]}))
    want = [hashes[3], hashes[5500], hashes[9999], "not-there"]
    got = cache.lookup(want)
    assert sorted(got["text_hash"].to_list()) == sorted(want[:3])
    by_hash = dict(zip(got["text_hash"].to_list(), got["vector"].to_numpy()))
    np.testing.assert_array_equal(by_hash[hashes[9999]], vecs[9999])
    np.testing.assert_array_equal(by_hash[hashes[3]], vecs[3])
    assert cache.lookup([]).height == 0
    assert EmbeddingCache(tmp_path, "other|torch").lookup(want).height == 0


def test_cache_of_another_model_id_is_refused(tmp_path, embedder):
    with pytest.raises(ValueError, match="model id"):
        embed_texts(["x"], cache=EmbeddingCache(tmp_path, "something-else|onnx"), embedder=embedder)


def test_onnx_backends_agree_with_torch(config, embedder, real_sentences, model_dir):
    ref = embedder.encode(real_sentences)
    for backend, floor in (("onnx", 0.999), ("onnx-int8", 0.99), ("onnx-int8-pertext", 0.99)):
        cfg = EmbedConfig(model_dir=config.model_dir, progress=False, backend=backend, batch_size=16)
        onnx = Embedder(cfg)
        assert backend in onnx.model_id and onnx.model_id != embedder.model_id
        v = onnx.encode(real_sentences)
        assert v.shape == ref.shape and v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        cos = (v * ref).sum(axis=1)
        assert cos.mean() >= floor, (backend, cos.mean())
    export = next(model_dir.glob("all-MiniLM-L6-v2-*-onnx"))
    assert (export / "model.onnx").is_file() and (export / "model-int8.onnx").is_file()


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"backend": "tensorrt"}, "backend"),
        ({"device": "gpu0"}, "device"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_seq_length": 1}, "max_seq_length"),
        ({"model": " "}, "model"),
    ],
)
def test_bad_config_names_the_setting(kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        EmbedConfig(**kwargs)


def test_missing_local_model_is_a_config_error(tmp_path, offline):
    cfg = EmbedConfig(model=str(tmp_path / "no-such-model"), model_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="model"):
        Embedder(cfg)
