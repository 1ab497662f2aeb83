"""The ONNX Runtime embedding backends (``onnx``, ``onnx-int8``, ``onnx-int8-pertext``).

The model's transformer is exported with ``torch.onnx.export`` (once, kept beside the model) and run by
ONNX Runtime, with the model's own tokenizer, pooling and normalization (see ``OnnxEncoder``).

Two ways to feed it:
- in batches of length-sorted texts, padded to the longest and masked (``onnx``, ``onnx-int8``). With
  int8 dynamic quantization the activation scales are computed over the whole batch, padding included,
  so a text's vector depends on its neighbours and on the batch size;
- one text per forward pass, unpadded (``onnx-int8-pertext``): the scales, and every other number of
  the pass, come from the text alone, so a vector is the same in any batch, order or thread count.
  Texts run side by side on a thread pool, each pass on one thread. On a CPU this is also the faster
  way: one text's activations stay in the core's cache, a batch's do not (`bench/bench_embed.py`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.embed_model import embedding_dim
from pipeline.locks import writer_lock

log = logging.getLogger(__name__)

_ONNX_POOLING = ("mean", "cls", "max")


def _atomic_export(path: Path, write) -> Path:
    """Run `write(tmp_path)` and rename the result onto `path` (a crash leaves no half file).

    One writer at a time: processes that load the model at once (the steps of two runs of one day) wait for the
    first one's file instead of exporting beside it (the quantizer writes a scratch file of a fixed name beside
    its input)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(path.parent, "onnx-export", path.stem):
        if path.is_file():
            return path
        tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex}.onnx")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def _export_onnx(st, path: Path) -> None:
    import torch

    names = list(st.tokenizer.model_input_names)
    auto_model = st[0].auto_model.to("cpu").eval()

    class _Hidden(torch.nn.Module):
        """The transformer as a plain function of its tokenizer's tensors, returning token states."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors))).last_hidden_state

    sample = st.tokenizer(["an example sentence", "hi"], padding=True, return_tensors="pt")
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["token_embeddings"]}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
        # dynamo=False: the torch.export path needs onnxscript; the tracer handles BERT-style encoders
        torch.onnx.export(
            _Hidden(auto_model),
            args,
            str(path),
            input_names=names,
            output_names=["token_embeddings"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantize_onnx(src: Path, dst: Path) -> None:
    """Int8 dynamic quantization, per output channel, of the weight MatMuls.

    Down-projections (more inputs than outputs: the feed-forward output layers) stay fp32: their
    inputs, post-GELU activations, carry outliers that per-tensor dynamic activation scales clip;
    quantizing them costs ~0.5 points of mean cosine to the fp32 model for little speed.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    dims = {init.name: list(init.dims) for init in graph.initializer}
    exclude = [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and len(dims.get(n.input[1], [])) == 2 and dims[n.input[1]][0] > dims[n.input[1]][1]
    ]
    hint = _DropLogLine("pre-processing before quantization")  # advice for static quantization only
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=exclude,
        )
    finally:
        logging.getLogger().removeFilter(hint)


class _DropLogLine(logging.Filter):
    def __init__(self, needle: str):
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()


class OnnxEncoder:
    """A sentence-transformers model run by ONNX Runtime: tokenizer -> transformer -> pooling -> L2.

    Batches are cut from texts sorted by token count, so padding stays small; with `per_text`, each text
    is its own unpadded pass, `workers` of them at once.
    """

    def __init__(
        self, session, tokenizer, pooling: str, max_length: int, dim: int, per_text: bool = False, workers: int = 1
    ):
        self.session = session
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.dim = dim
        self.per_text = per_text
        self.workers = max(1, workers)
        self.input_names = [i.name for i in session.get_inputs()]

    @classmethod
    def from_sentence_transformer(
        cls, st, export_dir: Path, quantize: bool, device: str, num_threads: int = 0, per_text: bool = False
    ):
        import onnxruntime as ort

        mods = list(st)
        kinds = [type(m).__name__ for m in mods]
        if (
            len(mods) < 2
            or not hasattr(mods[0], "auto_model")
            or kinds[1] != "Pooling"
            or any(k != "Normalize" for k in kinds[2:])
        ):
            raise ValueError(
                f"embed `backend`='onnx' supports Transformer -> Pooling [-> Normalize] models; this one is {kinds}: "
                "use backend='torch'"
            )
        pooling = mods[1].pooling_mode
        if pooling not in _ONNX_POOLING:
            raise ValueError(
                f"embed `backend`='onnx' supports pooling {_ONNX_POOLING}; this model uses "
                f"{pooling!r}: use backend='torch'"
            )
        path = _atomic_export(export_dir / "model.onnx", lambda tmp: _export_onnx(st, tmp))
        if quantize:
            path = _atomic_export(
                export_dir / "model-int8.onnx", lambda tmp: _quantize_onnx(export_dir / "model.onnx", tmp)
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # per text, the parallelism is across texts: each pass runs on the thread that called it
        options.intra_op_num_threads = 1 if per_text else num_threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and not per_text:
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning(
                    "device %s requested but this onnxruntime has no CUDA provider: running on CPU "
                    "(install onnxruntime-gpu, or use backend='torch' on GPUs)",
                    device,
                )
        session = ort.InferenceSession(str(path), options, providers=providers)
        workers = (num_threads or len(os.sched_getaffinity(0))) if per_text else 1
        return cls(session, st.tokenizer, pooling, int(st.max_seq_length), embedding_dim(st), per_text, workers)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Unit vectors of `texts`, in order; `batch_size` is ignored per text."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        types = enc.get("token_type_ids")
        if self.per_text:
            return self._encode_each(ids, types, progress)
        return self._encode_batches(ids, types, batch_size, progress)

    def _encode_each(self, ids: list, types: list | None, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        def one(j: int) -> np.ndarray:
            input_ids = np.asarray(ids[j], dtype=np.int64)[None, :]
            mask = np.ones_like(input_ids)
            token_types = np.asarray(types[j], dtype=np.int64)[None, :] if types is not None else 0 * mask
            feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_types}
            hidden = self.session.run(None, {n: feed[n] for n in self.input_names})[0]
            return _unit(self._pool(hidden, mask))[0]

        out = np.empty((len(ids), self.dim), dtype=np.float32)
        # longest first: the pool's last tasks are short ones, so its threads finish together
        order = sorted(range(len(ids)), key=lambda j: -len(ids[j]))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-pertext") as pool:
            for j, vector in zip(
                order, tqdm(pool.map(one, order), desc="Texts", total=len(order), disable=not progress)
            ):
                out[j] = vector
        return out

    def _encode_batches(self, ids: list, types: list | None, batch_size: int, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(ids), batch_size), desc="Batches", disable=not progress):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            input_ids = np.full((len(rows), width), pad, dtype=np.int64)
            token_types = np.zeros((len(rows), width), dtype=np.int64)
            for r, j in enumerate(rows):
                input_ids[r, : lengths[j]] = ids[j]
                if types is not None:
                    token_types[r, : lengths[j]] = types[j]
            mask = (np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64)
            feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_types}
            hidden = self.session.run(None, {n: feed[n] for n in self.input_names})[0]
            out[rows] = self._pool(hidden, mask)
        return _unit(out)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask[..., None].astype(np.float32)
        if self.pooling == "max":
            return np.where(m > 0, hidden, -1e9).max(axis=1)
        return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def _unit(rows: np.ndarray) -> np.ndarray:
    # same epsilon as torch.nn.functional.normalize, which the Normalize module uses
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
