from __future__ import annotations

import datetime as dt
import os

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.style import STYLE_FEATURES, style_matrix  # noqa: E402
from training.rewards.annotation_set import PAIRS  # noqa: E402
from training.rewards.base import RewardModel, prompt_contexts  # noqa: E402
from training.rewards.reward_embedding import EmbeddingHeadConfig, EmbeddingRewardModel, sentence_embedder  # noqa: E402
from training.rewards.reward_model import EngagementPairsConfig, engagement_pairs, load_reward_model  # noqa: E402

TOPICS = [
    "hiking",
    "cooking",
    "chess",
    "jazz",
    "painting",
    "soccer",
    "gardening",
    "movies",
    "travel",
    "coding",
    "photography",
    "running",
]
ENGAGING = [
    "That sounds fun! What do you like most about {t}?",
    "Oh nice, how long have you been into {t}?",
    "Really? What got you started with {t}, and who taught you?",
]
DULL = ["ok.", "I see.", "Fine. {t} is a thing people do."]


def _prompts(topics: list[str], day: dt.date) -> pl.DataFrame:
    rows = []
    for t in topics:
        for i, (good, bad) in enumerate(zip(ENGAGING, DULL)):
            hist = [{"role": "user", "content": f"I've been doing a lot of {t} lately, variant {i}."}]
            rows.append({"history": hist, "served_response": good.format(t=t), "continued": True, "reply_len": 40})
            rows.append({"history": hist, "served_response": bad.format(t=t), "continued": False, "reply_len": 0})
    return pl.DataFrame(rows).with_columns(pl.lit(day).alias("day"))


def _pairs(prompts: pl.DataFrame) -> pl.DataFrame:
    good, bad = prompts.filter(pl.col("continued")), prompts.filter(~pl.col("continued"))
    return pl.DataFrame(
        {
            "pair_id": [f"p{i}" for i in range(good.height)],
            "prompt_id": [None] * good.height,
            "prompt": good["history"],
            "chosen": good["served_response"],
            "rejected": bad["served_response"],
            "source": ["annotation", "engagement"] * (good.height // 2),
            "margin": [0.0] * good.height,
            "day": good["day"],
        }
    ).cast(dict(PAIRS))


@pytest.fixture(scope="module")
def embed_fn(tmp_path_factory):
    # the packaged all-MiniLM-L6-v2, extracted once into a temporary cache: nothing is downloaded
    embed = sentence_embedder(cache_dir=tmp_path_factory.mktemp("minilm"), device="cpu")
    cache: dict[str, np.ndarray] = {}

    def cached(texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
        if todo:
            cache.update(zip(todo, embed(todo)))
        return np.stack([cache[t] for t in texts])

    return cached


def test_style_features_count_artifacts():
    f = style_matrix(["Hello there!!! 😊🎉", "- one\n- two\n1. three", ""])
    col = {name: f[:, i] for i, name in enumerate(STYLE_FEATURES)}
    assert f.shape == (3, len(STYLE_FEATURES))
    assert np.expm1(col["emoji"]).round().tolist() == [2, 0, 0]
    assert np.expm1(col["exclamations"]).round().tolist() == [3, 0, 0]
    assert np.expm1(col["list_lines"]).round().tolist() == [0, 3, 0]
    assert col["log_chars"][2] == 0.0


def _engagement_frame() -> pl.DataFrame:
    rows = [
        # (prompt_id, conversation, cluster, last_user, response, continued, depth, thumbs, split)
        ("a1", "c1", 0, "how are you doing today?", "Great, and you?", True, 4, None, "train"),
        ("a2", "c2", 0, "how are you doing today", "fine", False, 0, None, "train"),
        ("a3", "c3", 0, "how are you doing today?!", "Doing well! Any plans?", True, 9, None, "train"),
        ("a4", "c4", 0, "how are you doing today?", "meh", True, 8, -1, "train"),
        # same text, other cluster or other split: never paired across
        ("b1", "c5", 1, "how are you doing today?", "Superb!", True, 5, None, "train"),
        ("e1", "c6", 0, "how are you doing today?", "ok", False, 0, None, "eval"),
        # different question in the same cluster
        ("a6", "c7", 0, "what is your favourite food?", "pizza", False, 0, None, "train"),
    ]
    df = pl.DataFrame(
        rows,
        schema=[
            "prompt_id",
            "conversation_id",
            "cluster_id",
            "last_user",
            "served_response",
            "continued",
            "depth_after",
            "thumbs",
            "split",
        ],
        orient="row",
    )
    return df.with_columns(
        pl.col("last_user")
        .map_elements(
            lambda t: [{"role": "user", "content": t}],
            return_dtype=pl.List(pl.Struct({"role": pl.Utf8, "content": pl.Utf8})),
        )
        .alias("history"),
        pl.lit(dt.date(2024, 1, 1)).alias("day"),
    )


def test_engagement_pairs_rules():
    df = _engagement_frame()
    pairs = engagement_pairs(df, EngagementPairsConfig(min_similarity=0.7, depth_margin=3, max_pairs_per_prompt=10))
    got = {(r["chosen_prompt_id"], r["rejected_prompt_id"]): r["signal"] for r in pairs.to_dicts()}
    # a3 and a4 differ by one turn of depth only: no pair; a6 asks something else; b1 and e1 sit
    # in another cluster or split
    assert got == {
        ("a1", "a2"): "continued",
        ("a3", "a2"): "continued",
        ("a4", "a2"): "continued",
        ("a3", "a1"): "depth",
        ("a4", "a1"): "depth",
    }
    assert set(pairs.columns) >= set(PAIRS.names())
    row = pairs.filter(pl.col("signal") == "depth").row(0, named=True)
    # the prompt of a pair is the history of the member with the smaller prompt_id
    assert row["prompt_id"] == "a1" and row["margin"] == 0.25 and row["source"] == "engagement"
    assert row["chosen"] == "Doing well! Any plans?"

    # opposite explicit thumbs outrank depth
    thumbs = df.with_columns(pl.when(pl.col("prompt_id") == "a1").then(pl.lit(1)).otherwise("thumbs").alias("thumbs"))
    pairs = engagement_pairs(thumbs, EngagementPairsConfig(min_similarity=0.7))
    sig = {(r["chosen_prompt_id"], r["rejected_prompt_id"]): r["signal"] for r in pairs.to_dicts()}
    assert sig[("a1", "a4")] == "thumbs"

    # two prompts of one conversation are never compared
    same_conv = df.filter(pl.col("prompt_id").is_in(["a1", "a2"])).with_columns(pl.lit("c1").alias("conversation_id"))
    assert engagement_pairs(same_conv, EngagementPairsConfig(min_similarity=0.7)).height == 0

    # a prompt joins at most max_pairs_per_prompt pairs; absent cluster_id/split are handled
    capped = engagement_pairs(
        df.drop("cluster_id", "split"), EngagementPairsConfig(min_similarity=0.7, max_pairs_per_prompt=1)
    )
    ids = capped["chosen_prompt_id"].to_list() + capped["rejected_prompt_id"].to_list()
    assert len(ids) == len(set(ids)) and capped.height >= 1


def test_engagement_pairs_config_is_validated():
    with pytest.raises(ValueError, match="min_similarity"):
        EngagementPairsConfig(min_similarity=0)
    with pytest.raises(ValueError, match="depth_margin"):
        EngagementPairsConfig(depth_margin=0)
    with pytest.raises(ValueError, match="kind"):
        EmbeddingHeadConfig(kind="listwise")


def test_embedding_pointwise_learns_and_round_trips(embed_fn, tmp_path):
    train = _prompts(TOPICS[:8], dt.date(2024, 1, 1))
    test = _prompts(TOPICS[8:], dt.date(2024, 1, 2))
    cfg = EmbeddingHeadConfig(kind="pointwise", epochs=60, batch_size=16, use_style=False)
    model = EmbeddingRewardModel.fit_pointwise(train, cfg, embed_fn=embed_fn)
    assert isinstance(model, RewardModel)
    assert model.metadata["kind"] == "pointwise" and model.metadata["n_train"] == train.height
    ctx, resp = prompt_contexts(test), test["served_response"].to_list()
    p = model.score(ctx, resp)
    assert p.shape == (test.height,) and ((p > 0) & (p < 1)).all()
    assert roc_auc_score(test["continued"].to_numpy(), p) > 0.9

    model.save(tmp_path / "rm")
    again = load_reward_model(tmp_path / "rm", embed_fn=embed_fn)
    assert isinstance(again, EmbeddingRewardModel)
    assert np.array_equal(again.score(ctx, resp), p)
    with pytest.raises(ValueError, match="embedder"):
        EmbeddingRewardModel.load(tmp_path / "rm", embed_fn=lambda texts: np.ones((len(texts), 8))).score(ctx, resp)


def test_embedding_pointwise_learns_the_label_it_is_given(embed_fn):
    # the dull replies are the positives of this label: a model of `continued` would rank them last
    train = _prompts(TOPICS[:8], dt.date(2024, 1, 1)).with_columns((~pl.col("continued")).alias("target"))
    test = _prompts(TOPICS[8:], dt.date(2024, 1, 2)).with_columns((~pl.col("continued")).alias("target"))
    cfg = EmbeddingHeadConfig(kind="pointwise", epochs=60, batch_size=16, use_style=False)
    model = EmbeddingRewardModel.fit_pointwise(train, cfg, embed_fn=embed_fn, label="target")
    assert model.metadata["label"] == "target"
    p = model.score(prompt_contexts(test), test["served_response"].to_list())
    assert roc_auc_score(test["target"].to_numpy(), p) > 0.9
    with pytest.raises(ValueError, match="label column"):
        EmbeddingRewardModel.fit_pointwise(train, cfg, embed_fn=embed_fn, label="nothing")


def test_embedding_pairwise_learns_and_round_trips(embed_fn, tmp_path):
    train = _pairs(_prompts(TOPICS[:8], dt.date(2024, 1, 1)))
    test = _pairs(_prompts(TOPICS[8:], dt.date(2024, 1, 2)))
    cfg = EmbeddingHeadConfig(kind="pairwise", epochs=40, batch_size=8, hidden=0, margin_scale=1.0)
    model = EmbeddingRewardModel.fit_pairwise(train, cfg, embed_fn=embed_fn)
    assert model.metadata["sources"] == {"annotation": 12, "engagement": 12}
    ctx = [[dict(m) for m in p] for p in test["prompt"].to_list()]
    u_c = model.score(ctx, test["chosen"].to_list())
    u_r = model.score(ctx, test["rejected"].to_list())
    assert np.mean(u_c > u_r) > 0.9
    model.save(tmp_path / "bt")
    again = load_reward_model(tmp_path / "bt", embed_fn=embed_fn)
    assert again.metadata["kind"] == "pairwise"
    assert np.array_equal(again.score(ctx, test["chosen"].to_list()), u_c)


def test_lm_pairwise_with_reward_trainer(tmp_path):
    from training.rewards.reward_lm import LMRewardConfig, LMRewardModel

    prompts = _prompts(TOPICS, dt.date(2024, 1, 1))
    pairs = _pairs(prompts)
    cfg = LMRewardConfig(
        kind="pairwise",
        max_steps=25,
        batch_size=8,
        learning_rate=3e-3,
        max_length=128,
        tiny_vocab_size=400,
        tiny_hidden_size=32,
        tiny_layers=2,
        use_margin=True,
    )
    model = LMRewardModel.fit_pairwise(pairs, cfg)
    assert isinstance(model, RewardModel)
    assert model.metadata["steps"] == 25 and model.metadata["backbone"] == "lm"
    assert model.model.config.num_hidden_layers == 2 and model.model.config.hidden_size == 32
    ctx = [[dict(m) for m in p] for p in pairs["prompt"].to_list()]
    u_c, u_r = model.score(ctx, pairs["chosen"].to_list()), model.score(ctx, pairs["rejected"].to_list())
    assert np.isfinite(u_c).all() and np.mean(u_c > u_r) > 0.9
    model.save(tmp_path / "lm")
    again = load_reward_model(tmp_path / "lm")
    assert np.array_equal(again.score(ctx, pairs["chosen"].to_list()), u_c)


def test_lm_pointwise_bce(tmp_path):
    from training.rewards.reward_lm import LMRewardConfig, LMRewardModel

    prompts = _prompts(TOPICS[:4], dt.date(2024, 1, 1))
    cfg = LMRewardConfig(kind="pointwise", max_steps=3, batch_size=8, max_length=128, tiny_vocab_size=300)
    model = LMRewardModel.fit_pointwise(prompts, cfg)
    p = model.score(prompt_contexts(prompts), prompts["served_response"].to_list())
    assert p.shape == (prompts.height,) and ((p > 0) & (p < 1)).all()
    assert model.metadata["steps"] == 3 and model.metadata["positive_rate"] == 0.5
    model.save(tmp_path / "lmp")
    again = load_reward_model(tmp_path / "lmp")
    assert np.array_equal(again.score(prompt_contexts(prompts), prompts["served_response"].to_list()), p)
    with pytest.raises(ValueError, match="device"):
        LMRewardConfig(device="tpu")
