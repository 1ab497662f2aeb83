"""Topic clusters: assignments, c-TF-IDF labels, examples, determinism and the topic map."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.semdedup import unit_rows
from pipeline.topics import TopicConfig, ctfidf_terms, fit_topics, plot_topic_map

TOPICS = {
    "food": ["pizza", "pasta", "cheese", "recipe", "oven"],
    "sport": ["soccer", "goal", "team", "coach", "league"],
    "code": ["python", "compiler", "bug", "function", "debugger"],
}


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    centres = unit_rows(rng.standard_normal((3, 48)))
    texts, topic, ids = [], [], []
    for t, (name, words) in enumerate(TOPICS.items()):
        for i in range(60):
            a, b = rng.choice(words, size=2, replace=False)
            texts.append(f"user: I really think the {a} and the {b} are great\nassistant: tell me more about {a}")
            topic.append(t)
            ids.append(f"{name}-{i}")
    topic = np.array(topic)
    vectors = unit_rows(centres[topic] + 0.5 * unit_rows(rng.standard_normal((len(topic), 48))))
    return vectors, texts, ids, topic


def test_topics_recover_the_planted_groups_with_distinctive_terms(corpus):
    vectors, texts, ids, topic = corpus
    assignments, clusters = fit_topics(vectors, texts, ids, TopicConfig(n_clusters=3))
    assert assignments.columns == ["row_id", "cluster_id", "similarity"] and assignments.height == 180
    assert assignments["row_id"].to_list() == ids
    # each planted topic lands in one cluster of its own
    a = assignments["cluster_id"].to_numpy()
    assert all(len(set(a[topic == t])) == 1 for t in range(3)) and len(set(a)) == 3
    assert clusters["size"].sum() == 180 and clusters["share"].sum() == pytest.approx(1.0)
    for t, words in enumerate(TOPICS.values()):
        row = clusters.filter(pl.col("cluster_id") == int(a[topic == t][0])).row(0, named=True)
        # the most distinctive terms are the topic's own words (or pairs of them) ...
        assert all(set(term.split()) <= set(words) for term in row["terms"][:4]), row["terms"]
        assert set(row["label"].split(" / ")[0].split()) <= set(words)
        # ... words every topic shares rank below them, and role names are never terms
        assert not {"really", "think", "great", "tell"} & set(row["terms"][:4])
        assert not {"user", "assistant"} & {w for term in row["terms"] for w in term.split()}
        assert len(row["examples"]) == 3 and all(e in texts for e in row["examples"])
        assert {ids.index(e) for e in row["example_ids"]} <= set(np.flatnonzero(topic == t))
        assert len(row["centroid"]) == 48
        assert row["term_scores"] == sorted(row["term_scores"], reverse=True)


def test_topics_are_deterministic_and_k_is_automatic(corpus):
    vectors, texts, ids, _ = corpus
    a1, c1 = fit_topics(vectors, texts, ids, TopicConfig(seed=3))
    a2, c2 = fit_topics(vectors, texts, ids, TopicConfig(seed=3))
    assert a1.equals(a2) and c1.equals(c2)
    assert c1.height == round(np.sqrt(180 / 2))  # sqrt(n/2), below the cap
    assert TopicConfig(max_clusters=5).clusters_for(10_000) == 5
    assert TopicConfig().clusters_for(1) == 1


def test_ctfidf_prefers_terms_specific_to_a_class():
    texts = ["apple banana common", "apple cherry common", "engine wheel common", "engine brake common"]
    terms = ctfidf_terms(texts, np.array([0, 0, 1, 1]), 2, TopicConfig(ngram_max=1, min_df=1))
    assert terms[0][0][0] == "apple" and terms[1][0][0] == "engine"
    assert "common" not in {t for t, _ in terms[0][:2]}
    assert ctfidf_terms(["the", "and"], np.array([0, 1]), 2, TopicConfig()) == [[], []]


def test_topic_map_png(corpus, tmp_path):
    vectors, texts, ids, _ = corpus
    assignments, clusters = fit_topics(vectors, texts, ids, TopicConfig(n_clusters=3))
    out = plot_topic_map(vectors, assignments, clusters, tmp_path / "reports" / "topics.png", max_points=100)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert [p.name for p in out.parent.iterdir()] == ["topics.png"]
    with pytest.raises(ValueError, match="vectors"):
        plot_topic_map(vectors[:5], assignments, clusters, tmp_path / "x.png")


def test_empty_and_bad_inputs(tmp_path):
    assignments, clusters = fit_topics(np.zeros((0, 8)), [], [], TopicConfig())
    assert assignments.height == 0 and clusters.height == 0
    assert plot_topic_map(np.zeros((0, 8)), assignments, clusters, tmp_path / "e.png").is_file()
    with pytest.raises(ValueError, match="align"):
        fit_topics(np.zeros((2, 8)), ["a"], ["x", "y"])
    with pytest.raises(ValueError, match="n_clusters"):
        TopicConfig(n_clusters=0)
    a, c = fit_topics(np.eye(3, 8), [None, "", "hello world"], ["a", "b", "c"], TopicConfig(n_clusters=2))
    assert a.height == 3 and c["size"].sum() == 3


def test_any_order_of_the_same_rows_gives_the_same_topics(corpus):
    vectors, texts, ids, _ = corpus
    perm = np.random.default_rng(9).permutation(len(ids))
    a1, c1 = fit_topics(vectors, texts, ids, TopicConfig(n_clusters=4))
    a2, c2 = fit_topics(vectors[perm], [texts[i] for i in perm], [ids[i] for i in perm], TopicConfig(n_clusters=4))
    assert a2["row_id"].to_list() == [ids[i] for i in perm]
    assert a1.sort("row_id").equals(a2.sort("row_id")) and c1.equals(c2)
