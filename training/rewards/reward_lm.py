"""The language-model reward backbone: a sequence-classification LM with one output.

- pairwise: trained with TRL's `RewardTrainer` on conversational preference data
  (`{"prompt": [...messages], "chosen": [assistant message], "rejected": [assistant message]}`,
  plus `margin` when `use_margin` is set), the Bradley-Terry loss -log sigmoid(r_c - r_r - margin);
- pointwise: the same model trained with the transformers `Trainer` on binary cross-entropy
  (`problem_type="multi_label_classification"` with one label), so sigmoid(output) = p(continue).

`model_name_or_path` names any local Hugging Face checkpoint (a causal LM gets a fresh score head;
with `lora_r > 0` only LoRA adapters and the head train). Left unset, a tiny Llama and a BPE
tokenizer with a chat template are built from the training texts, so the path runs offline on a
laptop; that tiny model is for exercising the pipeline, not for quality.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline.device import DEVICE_CHOICES, inference_autocast, resolve_device, trainer_device_kwargs
from training.rewards.base import KINDS, METADATA_FILE, Messages, pairs_to_lists, prompt_contexts

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


@dataclass
class LMRewardConfig:
    kind: str = field(
        default="pairwise", metadata={"help": "'pairwise' (RewardTrainer, BT loss) or 'pointwise' (BCE)."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Local HF checkpoint to start from; unset builds a tiny Llama + BPE tokenizer from the data."
        },
    )
    max_length: int = field(
        default=512, metadata={"help": "Most tokens per (context, response); contexts are cut from the left."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Epochs over the data (ignored when max_steps > 0)."}
    )
    max_steps: int = field(default=-1, metadata={"help": "Optimiser steps; -1 trains for num_train_epochs."})
    batch_size: int = field(default=8, metadata={"help": "Pairs (or rows) per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps accumulated per optimiser update."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory on large models."})
    device: str = field(
        default="auto",
        metadata={"help": "'auto' (CUDA when present, bf16 where the card supports it), 'cpu' or 'cuda'."},
    )
    use_margin: bool = field(default=False, metadata={"help": "Pass each pair's margin to the BT loss (pairwise)."})
    center_rewards_coefficient: float | None = field(
        default=None, metadata={"help": "Pull rewards towards zero mean (TRL's center_rewards_coefficient, e.g. 0.01)."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 fine-tunes every weight."})
    tiny_vocab_size: int = field(
        default=1000, metadata={"help": "BPE vocabulary of the tiny model built when no checkpoint is set."}
    )
    tiny_hidden_size: int = field(default=32, metadata={"help": "Hidden size of the tiny model."})
    tiny_layers: int = field(default=2, metadata={"help": "Transformer layers of the tiny model."})
    score_batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass when scoring."})
    seed: int = field(default=0, metadata={"help": "Seed of the head initialisation and data order."})
    logging_steps: int = field(default=10, metadata={"help": "Steps between training log lines."})

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not known: set it to one of {KINDS}")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"device={self.device!r} is not one of {DEVICE_CHOICES}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps={self.max_steps}: use -1 (epochs decide) or a positive count")
        for name in (
            "max_length",
            "batch_size",
            "gradient_accumulation_steps",
            "score_batch_size",
            "tiny_vocab_size",
            "tiny_hidden_size",
            "tiny_layers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.lora_r < 0:
            raise ValueError(f"lora_r={self.lora_r} must be >= 0")


def build_chat_tokenizer(texts: list[str], vocab_size: int = 1000):
    """A byte-level BPE tokenizer trained on `texts`, with special tokens and `CHAT_TEMPLATE`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", unk_token="<|unk|>", bos_token="<|bos|>", eos_token="<|end|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_backbone(texts: list[str], config: LMRewardConfig):
    """A randomly initialised LlamaForSequenceClassification (one output) and a tokenizer trained on `texts`."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = build_chat_tokenizer(texts, config.tiny_vocab_size)
    heads = max(1, config.tiny_hidden_size // 16)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.tiny_hidden_size,
        intermediate_size=2 * config.tiny_hidden_size,
        num_hidden_layers=config.tiny_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max(config.max_length, 64),
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(config.seed)
    return LlamaForSequenceClassification(llama), tokenizer


def _load_backbone(config: LMRewardConfig, texts: list[str]):
    if config.model_name_or_path is None:
        return build_tiny_backbone(texts, config)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(config.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        config.model_name_or_path, num_labels=1, local_files_only=True, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    if config.lora_r > 0:
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=config.lora_r,
            lora_alpha=2 * config.lora_r,
            target_modules="all-linear",
            modules_to_save=["score"],
        )
        model = get_peft_model(model, lora)
    return model, tokenizer


def _training_args(config: LMRewardConfig, output_dir: str, reward: bool) -> Any:
    from transformers import TrainingArguments
    from trl import RewardConfig

    common = dict(
        output_dir=output_dir,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=config.seed,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=config.gradient_checkpointing,
        **trainer_device_kwargs(config.device),
        logging_steps=min(config.logging_steps, config.max_steps) if config.max_steps > 0 else config.logging_steps,
        dataloader_pin_memory=resolve_device(config.device).type == "cuda",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers renames gradient_checkpointing in v6
        if reward:
            return RewardConfig(
                max_length=config.max_length, center_rewards_coefficient=config.center_rewards_coefficient, **common
            )
        return TrainingArguments(remove_unused_columns=False, **common)


class LMRewardModel:
    """A sequence-classification LM scoring `context + [assistant response]` rendered by its chat template."""

    backbone = "lm"

    def __init__(self, model, tokenizer, config: LMRewardConfig, metadata: dict[str, Any]):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.metadata = metadata
        self.device = resolve_device(config.device)
        self.model.to(self.device)

    def _ids(self, context: Messages, response: str) -> list[int]:
        msgs = list(context) + [{"role": "assistant", "content": response}]
        ids = self.tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
        # keep the end: the response is what is being scored
        return list(ids)[-self.config.max_length :]

    def _logits(self, contexts: list[Messages], responses: list[str]) -> np.ndarray:
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
        seqs = [self._ids(c, r) for c, r in zip(contexts, responses)]
        pad = self.tokenizer.pad_token_id
        out = []
        with torch.no_grad(), inference_autocast(self.device):
            for i in range(0, len(seqs), self.config.score_batch_size):
                chunk = seqs[i : i + self.config.score_batch_size]
                width = max(len(s) for s in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for j, s in enumerate(chunk):
                    ids[j, : len(s)] = torch.tensor(s)
                    mask[j, : len(s)] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                out.append(logits[:, 0].float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def score(self, contexts: list[Messages], responses: list[str]) -> np.ndarray:
        """p(continue) for a pointwise model, the Bradley-Terry utility for a pairwise one."""
        logits = self._logits(contexts, responses)
        return 1.0 / (1.0 + np.exp(-logits)) if self.metadata["kind"] == "pointwise" else logits

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if hasattr(self.model, "merge_and_unload"):  # a LoRA model is saved merged: one plain checkpoint
            self.model = self.model.merge_and_unload()
        self.model.save_pretrained(directory / "model")
        self.tokenizer.save_pretrained(directory / "model")
        (directory / METADATA_FILE).write_text(json.dumps(self.metadata, indent=2, sort_keys=True, default=str))
        return directory

    @classmethod
    def load(cls, directory: str | Path, **_: Any) -> LMRewardModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        directory = Path(directory)
        meta = json.loads((directory / METADATA_FILE).read_text())
        config = LMRewardConfig(**meta["config"])
        tokenizer = AutoTokenizer.from_pretrained(directory / "model", local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(directory / "model", local_files_only=True)
        return cls(model, tokenizer, config, meta)

    @classmethod
    def fit_pairwise(
        cls, pairs: pl.DataFrame, config: LMRewardConfig | None = None, output_dir: str | Path | None = None
    ) -> LMRewardModel:
        """Train on a `PAIRS` frame with TRL's `RewardTrainer`; `metadata` keeps its last training log."""
        from datasets import Dataset
        from trl import RewardTrainer

        config = config or LMRewardConfig()
        if config.kind != "pairwise":
            raise ValueError("fit_pairwise needs LMRewardConfig(kind='pairwise')")
        contexts, chosen, rejected, margins = pairs_to_lists(pairs)
        if not chosen:
            raise ValueError("pairwise training needs at least one pair")
        rows = []
        for ctx, c, r, m in zip(contexts, chosen, rejected, margins):
            row = {
                "prompt": ctx,
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
            }
            if config.use_margin:
                row["margin"] = float(m)
            rows.append(row)
        texts = [m["content"] for ctx in contexts for m in ctx] + chosen + rejected
        model, tokenizer = _load_backbone(config, texts)
        with _workdir(output_dir) as out:
            trainer = RewardTrainer(
                model=model,
                args=_training_args(config, str(out), reward=True),
                train_dataset=Dataset.from_list(rows),
                processing_class=tokenizer,
            )
            result = trainer.train()
        trained = trainer.model
        meta = {
            "backbone": cls.backbone,
            "kind": "pairwise",
            "config": asdict(config),
            "n_train": len(rows),
            "sources": dict(pairs.group_by("source").len().sort("source").rows()),
            "train_loss": float(result.training_loss),
            "steps": int(result.global_step),
            "last_log": _last_log(trainer),
        }
        return cls(trained, tokenizer, config, meta)

    @classmethod
    def fit_pointwise(
        cls, prompts: pl.DataFrame, config: LMRewardConfig | None = None, output_dir: str | Path | None = None
    ) -> LMRewardModel:
        """Train p(continue) on `prompts` rows (history, served_response, continued) with binary cross-entropy."""
        from datasets import Dataset
        from transformers import DataCollatorWithPadding, Trainer

        config = config or LMRewardConfig(kind="pointwise")
        if config.kind != "pointwise":
            raise ValueError("fit_pointwise needs LMRewardConfig(kind='pointwise')")
        usable = prompts.filter(pl.col("continued").is_not_null() & pl.col("served_response").is_not_null())
        if usable.height < 2:
            raise ValueError("pointwise training needs labelled rows")
        contexts, responses = prompt_contexts(usable), usable["served_response"].to_list()
        labels = usable["continued"].cast(pl.Float32).to_list()
        model, tokenizer = _load_backbone(config, [m["content"] for c in contexts for m in c] + responses)
        model.config.problem_type = "multi_label_classification"  # one sigmoid output: BCE with logits
        scorer = cls(model, tokenizer, config, {"kind": "pointwise"})
        rows = [{"input_ids": scorer._ids(c, r), "labels": [y]} for c, r, y in zip(contexts, responses, labels)]
        model.train()
        with _workdir(output_dir) as out:
            trainer = Trainer(
                model=model,
                args=_training_args(config, str(out), reward=False),
                train_dataset=Dataset.from_list(rows),
                data_collator=DataCollatorWithPadding(tokenizer),
            )
            result = trainer.train()
        meta = {
            "backbone": cls.backbone,
            "kind": "pointwise",
            "config": asdict(config),
            "n_train": len(rows),
            "skipped_rows": prompts.height - usable.height,
            "positive_rate": float(np.mean(labels)),
            "train_loss": float(result.training_loss),
            "steps": int(result.global_step),
            "last_log": _last_log(trainer),
        }
        return cls(trainer.model, tokenizer, config, meta)


def _workdir(output_dir: str | Path | None):
    """The trainer's scratch folder: a temporary one unless the caller wants checkpoints kept."""
    if output_dir is None:
        return tempfile.TemporaryDirectory()
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(output_dir))


def _last_log(trainer) -> dict[str, float]:
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {k: float(v) for k, v in (logs[-1] if logs else {}).items() if isinstance(v, (int, float))}
