"""Small offline inputs shared by the training tests: a chat corpus, a very small policy, prompt frames.

The policy is built once per test process (a few seconds) and reused, since every stage test needs one.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pipeline import schema
from training.policy.models import TinyLlamaConfig, build_tiny_policy

# Tiny models run fastest on one thread, and a shared 2-core machine makes extra threads spin and crawl.
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
}


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """Imported by a test module, pins torch to one thread for that module and restores it afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TOPICS = ["pizza", "hiking", "movies", "music", "cats", "the beach", "football", "books", "coffee", "travel"]

TINY = TinyLlamaConfig(
    vocab_size=512,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
    pretrain_steps=40,
    pretrain_batch_size=4,
    pretrain_seq_len=64,
    pretrain_lr=5e-3,
    device="cpu",
)


def corpus(n: int = 120) -> list[list[dict]]:
    """Short, varied conversations in chat-message form."""
    out = []
    for i in range(n):
        a, b = TOPICS[i % len(TOPICS)], TOPICS[(i * 3 + 1) % len(TOPICS)]
        conv = [
            {"role": "user", "content": f"hey, do you like {a}?"},
            {"role": "assistant", "content": f"I love {a}! what about you?"},
            {"role": "user", "content": f"I prefer {b}, honestly."},
            {"role": "assistant", "content": f"{b} is great too. tell me more about {b}."},
        ]
        if i % 4 == 0:
            conv.insert(0, {"role": "system", "content": f"You are Robin, who adores {a}."})
        out.append(conv)
    return out


@functools.cache
def tiny_policy_dir() -> str:
    root = Path(tempfile.mkdtemp(prefix="tiny-policy-"))
    atexit.register(shutil.rmtree, root, True)
    build_tiny_policy(corpus(), root / "policy", TINY)
    return str(root / "policy")


def prompts_frame(n: int = 3, day: dt.date = dt.date(2024, 5, 1)) -> pl.DataFrame:
    """n prompts following schema.PROMPTS (plus `split`), all training split."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        history = [{"role": "user", "content": f"hi! do you like {topic}?"}]
        if i % 2:
            history += [{"role": "assistant", "content": "sure I do."}, {"role": "user", "content": "why?"}]
        rows.append(
            {
                "prompt_id": f"p{i}",
                "conversation_id": f"c{i}",
                "cut_turn": len(history) - 1,
                "history": history,
                "system": "You are Robin." if i % 3 == 0 else None,
                "character_id": "robin",
                "user_hash": f"u{i}",
                "source": "internal",
                "text": "",
                "last_user": history[-1]["content"],
                "served_response": f"I like {topic} a lot, it is fun.",
                "served_by": "gen0",
                "continued": True,
                "reply_len": 20,
                "depth_after": 3,
                "thumbs": None,
                "day": day,
                "split": "train",
            }
        )
    frame = pl.DataFrame(rows, schema={**dict(schema.PROMPTS), "split": pl.Utf8})
    return frame


def length_scorer(contexts: list[list[dict]], responses: list[str]) -> np.ndarray:
    """A stand-in pointwise reward: longer replies (up to 40 chars) score higher."""
    assert all(ctx and ctx[-1]["role"] == "user" for ctx in contexts)
    return np.array([min(len(r), 40) / 40.0 for r in responses])


def candidates_frame(prompts: pl.DataFrame, per_prompt: int = 3) -> pl.DataFrame:
    """Hand-written candidates (no generation) with scores that differ within each prompt."""
    from training.policy.candidates import CANDIDATES

    replies = ["I love that, tell me more!", "ok", "that sounds fun, what else do you enjoy?", "sure thing"]
    rows = [
        {
            "prompt_id": pid,
            "generator": "gen0",
            "sample_idx": i,
            "text": replies[(k + i) % len(replies)],
            "rm_pointwise": float(i + k % 3) / 3,
            "p_continue": None,
            "n_chars": 0,
            "n_emoji": 0,
            "has_list": False,
            "n_tokens": 5,
        }
        for k, pid in enumerate(prompts["prompt_id"])
        for i in range(per_prompt)
    ]
    return pl.DataFrame(rows, schema=CANDIDATES)


def saved_datasets(root: Path, n_prompts: int = 8) -> dict[str, str]:
    """SFT, preference and RL-pool datasets built by the real builders and saved under `root`."""
    from training.policy.preference_dataset import PreferenceBuildConfig, build_preference_dataset
    from training.policy.rl_pool import select_rl_prompts
    from training.policy.sft_dataset import SFTBuildConfig, build_sft_dataset

    prompts = prompts_frame(n_prompts)
    cands = candidates_frame(prompts)
    sft = build_sft_dataset(prompts, cands, SFTBuildConfig(min_score=0.0, mix={"rejection_sampled": 1.0}))
    # four hand-written replies of very different lengths: any pair will do for a stage's smoke test
    loose = PreferenceBuildConfig(max_length_delta=1000, max_length_ratio=1000.0, length_balance=None)
    prefs = build_preference_dataset(prompts, cands, loose)
    rl = select_rl_prompts(prompts, cands)
    return {
        "sft": str(sft.save(root / "sft")),
        "prefs": str(prefs.save(root / "prefs")),
        "rl": str(rl.save(root / "rl")),
        "rl_rows": len(rl.dataset),
        "prefs_rows": len(prefs.dataset),
    }


def cands(rows: list[tuple[str, int, str, float | None]]) -> pl.DataFrame:
    """(prompt_id, sample_idx, text, score) rows as a CANDIDATES frame from generator gen1."""
    from training.policy.candidates import CANDIDATES

    return pl.DataFrame(
        [
            {
                "prompt_id": p,
                "generator": "gen1",
                "sample_idx": i,
                "text": t,
                "rm_pointwise": s,
                "p_continue": None,
                "n_chars": len(t),
                "n_emoji": 0,
                "has_list": False,
                "n_tokens": 5,
            }
            for p, i, t, s in rows
        ],
        schema=CANDIDATES,
    )


def drop_reasons(result) -> dict[str, str]:
    """row_id -> reason_code of a build result's drops."""
    return dict(zip(result.drops["row_id"], result.drops["reason_code"], strict=True))
