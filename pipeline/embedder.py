"""The encoder: texts to normalized float32 vectors with one configured model and backend.

Two kinds of backend:
- ``torch``: sentence-transformers (CUDA when present, fp16 there, with larger batches). Texts are sorted
  by length and cut into batches here, and each batch is encoded as a unit, so the batches, and
  therefore the vectors, are the same on one device and when the batches are shared over every visible
  GPU (a multi-process pool, one process per device: `pipeline.embed_pool`).
- ``onnx`` / ``onnx-int8`` / ``onnx-int8-pertext``: ONNX Runtime (`pipeline.onnx_encoder`); the last one,
  the default on a CPU, encodes each text alone, so its vector of a text never depends on the batch.

Vectors are float32 and L2-normalized, so a dot product is a cosine.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.embed_config import EmbedConfig, resolve_device, slug
from pipeline.embed_model import embedding_dim, load_sentence_transformer, resolve_model
from pipeline.embed_pool import start_pool, stop_pool
from pipeline.onnx_encoder import OnnxEncoder


class Embedder:
    """Turns texts into normalized float32 vectors with one configured model and backend.

    `texts_encoded` and `calls` count the work actually done (the cache tests and metadata use them).
    """

    def __init__(self, config: EmbedConfig | None = None):
        self.config = config or EmbedConfig()
        self.model_id = self.config.model_id
        self.device = resolve_device(self.config.device)
        self.texts_encoded = 0
        self.calls = 0
        self.batch_size = self.config.resolved_batch_size()
        self.devices = self.config.resolved_devices()
        self._lock = threading.Lock()
        self._pool = None
        # ONNX exports from a CPU copy; ONNX Runtime picks its own device
        st = load_sentence_transformer(self.config, self.device if self.config.backend == "torch" else "cpu")
        source = resolve_model(self.config)
        if self.config.backend == "torch":
            if self.config.resolved_precision() == "fp16":
                st.half()
            self._st = st
            self._onnx = None
            self.dim = embedding_dim(st)
        else:
            self._st = None
            self._onnx = OnnxEncoder.from_sentence_transformer(
                st,
                export_dir=self.config.resolved_model_dir() / f"{slug(source, Path(source).name)}-onnx",
                quantize=self.config.backend in ("onnx-int8", "onnx-int8-pertext"),
                device=self.device,
                num_threads=self.config.num_threads,
                per_text=self.config.backend == "onnx-int8-pertext",
            )
            self.dim = self._onnx.dim
            del st

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = ["" if t is None else str(t) for t in texts]
        with self._lock:
            self.calls += 1
            self.texts_encoded += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._st is not None:
            vecs = self._encode_torch(texts)
        else:
            vecs = self._onnx.encode(texts, batch_size=self.batch_size, progress=self.config.progress)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def token_counts(self, texts: Sequence[str], chunk: int = 4096) -> list[int]:
        """Tokens of each text as the encoder feeds it (cut at the model's limit): the width a batch pads to.

        Tokenized `chunk` texts at a time, so a day of any size holds one chunk's token ids at once."""
        if self._st is not None:
            tokenizer, limit = self._st.tokenizer, self._st.max_seq_length
        else:
            tokenizer, limit = self._onnx.tokenizer, self._onnx.max_length
        items = ["" if t is None else str(t) for t in texts]
        counts: list[int] = []
        for start in range(0, len(items), chunk):
            enc = tokenizer(items[start : start + chunk], truncation=True, max_length=limit)
            counts.extend(len(ids) for ids in enc["input_ids"])
        return counts

    def _encode_torch(self, texts: list[str]) -> np.ndarray:
        """Length-sorted batches, each encoded as a unit, on one device or shared over the pool's devices.

        A batch is the unit of work in both cases (the pool's chunk size is the batch size), so a text is
        always encoded beside the same neighbours, padded to the same width, and gets the same vector.
        """
        from tqdm.auto import tqdm

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # stable: ties keep input order
        ordered = [texts[i] for i in order]
        bs = self.batch_size
        # most models end in a Normalize module; normalize_embeddings makes unit length a guarantee for all
        kwargs = {"batch_size": bs, "convert_to_numpy": True, "normalize_embeddings": True}
        if len(self.devices) > 1:
            vecs = self._st.encode(
                ordered, pool=self._start_pool(), chunk_size=bs, show_progress_bar=self.config.progress, **kwargs
            )
        else:
            starts = range(0, len(ordered), bs)
            parts = [
                self._st.encode(ordered[s : s + bs], show_progress_bar=False, **kwargs)
                for s in tqdm(starts, desc="Batches", disable=not self.config.progress)
            ]
            vecs = np.concatenate(parts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        out[order] = vecs
        if self.config.resolved_precision() == "fp16":
            # the model normalized in fp16; unit length is promised to float32 precision
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _start_pool(self):
        """One process per device, started on first use and stopped at exit (or by `close`)."""
        with self._lock:
            if self._pool is None:
                self._pool = start_pool(self._st, self.devices)
                atexit.register(self.close)
            return self._pool

    def close(self) -> None:
        """Stop the device pool's processes, if any were started (in bounded time: `embed_pool.stop_pool`)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            stop_pool(pool)


@lru_cache(maxsize=4)
def get_embedder(config: EmbedConfig) -> Embedder:
    """One loaded model per config and process (loading costs seconds)."""
    return Embedder(config)
