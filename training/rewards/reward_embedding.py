"""The fast reward backbone: a small head on frozen sentence embeddings (the CPU default).

A (context, response) pair becomes `[c, r, c*r, |c-r|, style(r)]`, with `c` and `r` the
normalised embeddings of the rendered context and of the response and `style` the standardised
`engine.style.STYLE_FEATURES`. A torch MLP (or a linear layer with `hidden=0`) reads it:

- pointwise: two outputs, the logit of p(continue) (binary cross-entropy) and the standardised
  log(1 + reply_len) (squared error, weighted by `reply_len_weight`);
- pairwise: one output, the Bradley-Terry utility, trained on -log sigmoid(u(chosen) - u(rejected)
  - margin_scale * margin).

The embedder is a callable `list[str] -> array` so that a pipeline passes its cached embedder;
`sentence_embedder` builds the default one offline from the packaged all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from engine.style import STYLE_FEATURES, style_matrix
from pipeline.device import DEVICE_CHOICES, resolve_device
from pipeline.embed_config import DEFAULT_MODEL as DEFAULT_EMBEDDING_MODEL
from training.rewards.base import (
    KINDS,
    METADATA_FILE,
    EmbedFn,
    Messages,
    pairs_to_lists,
    prompt_contexts,
    render_context,
)

WEIGHTS_FILE = "head.safetensors"


def sentence_embedder(
    model: str = DEFAULT_EMBEDDING_MODEL,
    *,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    backend: str = "torch",
) -> EmbedFn:
    """The pipeline's embedder (`pipeline.embed`, torch backend) as a plain `list[str] -> array` callable.

    The default model is the packaged all-MiniLM-L6-v2, extracted once under `cache_dir` (the
    pipeline's model folder when unset). Pass the pipeline's cached embedder instead where one exists.
    """
    from pipeline.embed_config import EmbedConfig
    from pipeline.embedder import get_embedder

    config = EmbedConfig(
        model=model,
        backend=backend,
        device=device,
        progress=False,
        model_dir=str(cache_dir) if cache_dir is not None else None,
    )
    return get_embedder(config).encode


@dataclass
class EmbeddingHeadConfig:
    kind: str = field(
        default="pointwise", metadata={"help": "'pointwise' (p(continue)) or 'pairwise' (Bradley-Terry)."}
    )
    hidden: int = field(
        default=64, metadata={"help": "Hidden units of the MLP head; 0 makes it linear (logistic / linear BT)."}
    )
    dropout: float = field(default=0.1, metadata={"help": "Dropout after the hidden layer while training."})
    epochs: int = field(default=30, metadata={"help": "Passes over the training rows."})
    batch_size: int = field(default=256, metadata={"help": "Rows (or pairs) per optimiser step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=1e-3, metadata={"help": "AdamW weight decay."})
    context_messages: int = field(
        default=4, metadata={"help": "Last messages of the context that are embedded; 0 embeds all of them."}
    )
    use_style: bool = field(
        default=True, metadata={"help": "Feed the response's surface features (length, emoji, ...) to the head."}
    )
    reply_len_weight: float = field(
        default=0.3, metadata={"help": "Weight of the reply-length regression loss next to p(continue) (pointwise)."}
    )
    margin_scale: float = field(
        default=0.0,
        metadata={"help": "Multiplies each pair's margin inside the BT loss (pairwise); 0 ignores margins."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and shuffling."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when present), 'cpu' or 'cuda'."})
    embedding_backend: str = field(
        default="torch",
        metadata={"help": "Backend of the embedder rebuilt on load (torch, onnx, onnx-int8): the one trained with."},
    )
    embedding_model: str = field(
        default=DEFAULT_EMBEDDING_MODEL,
        metadata={"help": "Name recorded with the model, used to rebuild the embedder on load when none is passed."},
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not known: set it to one of {KINDS}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.hidden < 0 or self.context_messages < 0:
            raise ValueError("hidden and context_messages must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be positive")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"device={self.device!r} is not one of {DEVICE_CHOICES}")
        if self.reply_len_weight < 0 or self.margin_scale < 0:
            raise ValueError("reply_len_weight and margin_scale must be >= 0")


class _Head(nn.Module):
    def __init__(self, in_dim: int, n_style: int, hidden: int, dropout: float, n_out: int):
        super().__init__()
        self.body = (
            nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout)) if hidden else nn.Identity()
        )
        self.out = nn.Linear(hidden or in_dim, n_out)
        # normalisation constants travel with the weights, so a reloaded model scores identically
        self.register_buffer("style_mean", torch.zeros(n_style))
        self.register_buffer("style_std", torch.ones(n_style))
        self.register_buffer("len_mean", torch.zeros(()))
        self.register_buffer("len_std", torch.ones(()))

    def forward(self, emb: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = (style - self.style_mean) / self.style_std
        return self.out(self.body(torch.cat([emb, style], dim=1)))


class EmbeddingRewardModel:
    """A reward head on frozen sentence embeddings; `metadata['kind']` says pointwise or pairwise."""

    backbone = "embedding"

    def __init__(self, head: _Head, config: EmbeddingHeadConfig, embed_fn: EmbedFn, metadata: dict[str, Any]):
        self.head = head.eval()
        self.config = config
        self.embed_fn = embed_fn
        self.metadata = metadata
        self.device = resolve_device(config.device)
        self.head.to(self.device)

    # -- features -------------------------------------------------------------------------------
    def _embed(self, texts: list[str]) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        vectors = np.asarray(self.embed_fn(unique), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(unique):
            raise ValueError(f"embed_fn returned shape {vectors.shape} for {len(unique)} texts")
        expected = self.metadata.get("embedding_dim")
        if expected is not None and vectors.shape[1] != expected:
            raise ValueError(
                f"embed_fn gives {vectors.shape[1]}-d vectors but the model was trained on {expected}-d "
                f"({self.metadata.get('embedding_model')}): pass the embedder it was trained with"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        pos = {t: i for i, t in enumerate(unique)}
        return vectors[[pos[t] for t in texts]]

    def features(self, contexts: list[Messages], responses: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embedding features and raw style features of each (context, response)."""
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
        ctx_text = [render_context(c, self.config.context_messages) for c in contexts]
        both = self._embed(ctx_text + list(responses))
        c, r = both[: len(contexts)], both[len(contexts) :]
        emb = np.concatenate([c, r, c * r, np.abs(c - r)], axis=1)
        style = style_matrix(list(responses)) if self.config.use_style else np.zeros((len(responses), 0), np.float32)
        return emb, style

    def _forward(self, emb: np.ndarray, style: np.ndarray, batch: int = 4096) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for i in range(0, len(emb), batch):
                e = torch.from_numpy(emb[i : i + batch]).to(self.device)
                s = torch.from_numpy(style[i : i + batch]).to(self.device)
                outs.append(self.head(e, s).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, self.head.out.out_features), np.float32)

    # -- interface ------------------------------------------------------------------------------
    def score(self, contexts: list[Messages], responses: list[str]) -> np.ndarray:
        """p(continue) for a pointwise model, the Bradley-Terry utility for a pairwise one."""
        if not responses:
            return np.zeros(0, dtype=np.float64)
        out = self._forward(*self.features(contexts, responses))[:, 0].astype(np.float64)
        return 1.0 / (1.0 + np.exp(-out)) if self.metadata["kind"] == "pointwise" else out

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        (directory / METADATA_FILE).write_text(json.dumps(self.metadata, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, embed_fn: EmbedFn | None = None, device: str | None = None, **_: Any
    ) -> EmbeddingRewardModel:
        """Reopen a saved head; without `embed_fn`, the recorded `embedding_model` is loaded offline."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / METADATA_FILE).read_text())
        config = EmbeddingHeadConfig(**meta["config"])
        if device is not None:
            config.device = device
        head = _Head(meta["feature_dim"], meta["n_style"], config.hidden, config.dropout, meta["n_out"])
        head.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return cls(
            head,
            config,
            embed_fn
            or sentence_embedder(config.embedding_model, device=config.device, backend=config.embedding_backend),
            meta,
        )

    # -- training -------------------------------------------------------------------------------
    @classmethod
    def _new(
        cls, config: EmbeddingHeadConfig, embed_fn: EmbedFn, emb_dim: int, n_style: int, n_out: int
    ) -> EmbeddingRewardModel:
        torch.manual_seed(config.seed)
        head = _Head(4 * emb_dim + n_style, n_style, config.hidden, config.dropout, n_out)
        meta = {
            "backbone": cls.backbone,
            "kind": config.kind,
            "config": asdict(config),
            "embedding_model": config.embedding_model,
            "embedding_dim": emb_dim,
            "feature_dim": 4 * emb_dim + n_style,
            "n_style": n_style,
            "n_out": n_out,
            "style_features": list(STYLE_FEATURES) if config.use_style else [],
        }
        return cls(head, config, embed_fn, meta)

    def _set_style_stats(self, style: np.ndarray) -> None:
        if style.shape[1]:
            self.head.style_mean.copy_(torch.from_numpy(style.mean(axis=0)))
            self.head.style_std.copy_(torch.from_numpy(np.maximum(style.std(axis=0), 1e-3)))

    def _optimise(self, n: int, loss_fn) -> list[float]:
        config = self.config
        self.head.train()
        opt = torch.optim.AdamW(self.head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        gen = torch.Generator().manual_seed(config.seed)
        losses = []
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for i in range(0, n, config.batch_size):
                idx = order[i : i + config.batch_size]
                loss = loss_fn(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / n)
        self.head.eval()
        return losses

    @classmethod
    def fit_pointwise(
        cls,
        prompts: pl.DataFrame,
        config: EmbeddingHeadConfig | None = None,
        embed_fn: EmbedFn | None = None,
        label: str = "continued",
    ) -> EmbeddingRewardModel:
        """Train p(label) and reply length on `prompts` rows (history, served_response, `label`, reply_len);
        `label` is a boolean column, `continued` by default (`training.rewards.engagement_label` builds others).

        Rows with a null label or response are skipped (`metadata['skipped_rows']` counts them).
        """
        config = config or EmbeddingHeadConfig()
        if config.kind != "pointwise":
            raise ValueError("fit_pointwise needs EmbeddingHeadConfig(kind='pointwise')")
        if label not in prompts.columns:
            raise ValueError(f"the training rows lack the label column {label!r}")
        usable = prompts.filter(pl.col(label).is_not_null() & pl.col("served_response").is_not_null())
        if usable.height < 2 or usable[label].n_unique() < 2:
            raise ValueError(f"pointwise training needs at least one positive and one negative `{label}` response")
        embed_fn = embed_fn or sentence_embedder(
            config.embedding_model, device=config.device, backend=config.embedding_backend
        )
        contexts, responses = prompt_contexts(usable), usable["served_response"].to_list()
        y = usable[label].cast(pl.Float32).to_numpy()
        reply = (
            usable["reply_len"].fill_null(0).clip(0, None)
            if "reply_len" in usable.columns
            else pl.Series(np.zeros(usable.height))
        )
        log_len = np.log1p(reply.to_numpy().astype(np.float64)).astype(np.float32)

        probe = np.asarray(embed_fn(responses[:1]), dtype=np.float32)
        n_style = len(STYLE_FEATURES) if config.use_style else 0
        model = cls._new(config, embed_fn, probe.shape[1], n_style, n_out=2)
        emb, style = model.features(contexts, responses)
        model._set_style_stats(style)
        model.head.len_mean.fill_(float(log_len.mean()))
        model.head.len_std.fill_(float(max(log_len.std(), 1e-3)))
        dev = model.device
        emb_t, style_t = torch.from_numpy(emb).to(dev), torch.from_numpy(style).to(dev)
        y_t = torch.from_numpy(y).to(dev)
        len_t = ((torch.from_numpy(log_len) - model.head.len_mean.cpu()) / model.head.len_std.cpu()).to(dev)
        bce = nn.BCEWithLogitsLoss()

        def loss_fn(idx):
            out = model.head(emb_t[idx], style_t[idx])
            return bce(out[:, 0], y_t[idx]) + config.reply_len_weight * ((out[:, 1] - len_t[idx]) ** 2).mean()

        losses = model._optimise(len(y), loss_fn)
        model.metadata.update(
            {
                "n_train": int(len(y)),
                "label": label,
                "skipped_rows": prompts.height - usable.height,
                "positive_rate": float(y.mean()),
                "final_loss": losses[-1],
            }
        )
        return model

    @classmethod
    def fit_pairwise(
        cls, pairs: pl.DataFrame, config: EmbeddingHeadConfig | None = None, embed_fn: EmbedFn | None = None
    ) -> EmbeddingRewardModel:
        """Train a Bradley-Terry utility on a `PAIRS` frame (annotation, HH-RLHF and engagement pairs alike)."""
        config = config or EmbeddingHeadConfig(kind="pairwise")
        if config.kind != "pairwise":
            raise ValueError("fit_pairwise needs EmbeddingHeadConfig(kind='pairwise')")
        if pairs.height < 1:
            raise ValueError("pairwise training needs at least one pair")
        embed_fn = embed_fn or sentence_embedder(
            config.embedding_model, device=config.device, backend=config.embedding_backend
        )
        contexts, chosen, rejected, margins = pairs_to_lists(pairs)
        n = len(chosen)
        probe = np.asarray(embed_fn(chosen[:1]), dtype=np.float32)
        n_style = len(STYLE_FEATURES) if config.use_style else 0
        model = cls._new(config, embed_fn, probe.shape[1], n_style, n_out=1)
        emb, style = model.features(contexts + contexts, chosen + rejected)
        model._set_style_stats(style)
        dev = model.device
        emb_t, style_t = torch.from_numpy(emb).to(dev), torch.from_numpy(style).to(dev)
        margin_t = torch.from_numpy(margins).to(dev) * config.margin_scale

        def loss_fn(idx):
            both = torch.cat([idx, idx + n]).to(dev)
            u = model.head(emb_t[both], style_t[both])[:, 0]
            u_c, u_r = u[: len(idx)], u[len(idx) :]
            return -nn.functional.logsigmoid(u_c - u_r - margin_t[idx.to(dev)]).mean()

        losses = model._optimise(n, loss_fn)
        u = model._forward(emb, style)[:, 0]
        model.metadata.update(
            {
                "n_train": n,
                "sources": dict(pairs.group_by("source").len().sort("source").rows()),
                "final_loss": losses[-1],
                "train_pair_accuracy": float(np.mean(u[:n] > u[n:])),
            }
        )
        return model
