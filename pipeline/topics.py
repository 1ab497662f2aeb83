"""Topic clusters over prompt embeddings, each named by its most distinctive terms.

Spherical k-means (FAISS, the same routine semantic dedup uses) assigns each row a ``cluster_id``.
Each cluster is labelled with class-based TF-IDF (c-TF-IDF, as in BERTopic: the texts of a cluster
form one document; a term scores high when frequent in the cluster and rare across clusters), using
scikit-learn's CountVectorizer with English stop words. The cluster table also carries size, share,
the rows closest to the centroid as examples, and the centroid itself. ``plot_topic_map`` draws a
2-D PCA map of sampled rows and the centroids as a PNG.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.row_order import id_order, is_id_ordered
from pipeline.semdedup import spherical_kmeans, unit_rows

# chat transcripts are rendered as "user: ..." / "assistant: ..." lines: role names say nothing of topic
ROLE_WORDS = ("user", "assistant", "system")


@dataclass(frozen=True)
class TopicConfig:
    n_clusters: int | None = field(
        default=None, metadata={"help": "number of topics; None = sqrt(rows / 2), between 2 and max_clusters"}
    )
    max_clusters: int = field(default=50, metadata={"help": "cap of the automatic number of topics"})
    kmeans_iters: int = field(default=25, metadata={"help": "k-means iterations"})
    seed: int = field(default=0, metadata={"help": "k-means and plot sampling seed: same input, same topics"})
    n_terms: int = field(default=8, metadata={"help": "label terms kept per topic"})
    n_examples: int = field(default=3, metadata={"help": "example texts per topic (closest to its centre)"})
    example_chars: int = field(default=300, metadata={"help": "examples are cut to this many characters"})
    ngram_max: int = field(default=2, metadata={"help": "longest term in words (1 = single words, 2 = also pairs)"})
    min_df: int = field(default=2, metadata={"help": "a term must occur in this many texts (1 on tiny inputs)"})
    max_features: int = field(default=50_000, metadata={"help": "vocabulary cap (most frequent terms)"})
    extra_stop_words: tuple[str, ...] = field(
        default=ROLE_WORDS, metadata={"help": "words ignored besides scikit-learn's English stop words"}
    )
    use_gpu: bool = field(default=True, metadata={"help": "use FAISS GPUs for k-means when present"})

    def __post_init__(self) -> None:
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"topics `n_clusters`={self.n_clusters} must be >= 1 or None (automatic)")
        if self.max_clusters < 1:
            raise ValueError(f"topics `max_clusters`={self.max_clusters} must be >= 1")
        for name in ("kmeans_iters", "n_terms", "example_chars", "ngram_max", "min_df", "max_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"topics `{name}`={getattr(self, name)} must be >= 1")
        if self.n_examples < 0:
            raise ValueError(f"topics `n_examples`={self.n_examples} must be >= 0")

    def clusters_for(self, n: int) -> int:
        if n == 0:
            return 0
        k = self.n_clusters if self.n_clusters is not None else min(self.max_clusters, max(2, round(np.sqrt(n / 2))))
        return max(1, min(k, n))


ASSIGNMENTS_SCHEMA = pl.Schema({"row_id": pl.Utf8, "cluster_id": pl.Int32, "similarity": pl.Float32})


def clusters_schema(dim: int) -> pl.Schema:
    return pl.Schema(
        {
            "cluster_id": pl.Int32,
            "size": pl.Int64,
            "share": pl.Float64,
            "label": pl.Utf8,
            "terms": pl.List(pl.Utf8),
            "term_scores": pl.List(pl.Float64),
            "examples": pl.List(pl.Utf8),
            "example_ids": pl.List(pl.Utf8),
            "centroid": pl.Array(pl.Float32, max(dim, 1)),
        }
    )


def ctfidf_terms(
    texts: Sequence[str], labels: np.ndarray, k: int, config: TopicConfig
) -> list[list[tuple[str, float]]]:
    """Top terms of each of `k` classes by c-TF-IDF: tf within the class x log(1 + A / f_term),
    where A is the average word count of a class and f_term the term's count over all classes."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    stop = sorted(ENGLISH_STOP_WORDS.union(config.extra_stop_words))
    min_df = config.min_df if len(texts) >= 10 * config.min_df else 1
    vec = CountVectorizer(
        stop_words=stop, ngram_range=(1, config.ngram_max), min_df=min_df, max_features=config.max_features
    )
    try:
        counts = vec.fit_transform(texts)
    except ValueError:  # nothing but stop words and empty strings
        return [[] for _ in range(k)]
    onehot = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    per_class = (onehot @ counts).toarray().astype(np.float64)
    words = per_class.sum(axis=1, keepdims=True)
    tf = per_class / np.where(words > 0, words, 1.0)
    avg_words = per_class.sum() / max(k, 1)
    idf = np.log1p(avg_words / np.maximum(per_class.sum(axis=0), 1.0))
    scores = tf * idf
    vocab = vec.get_feature_names_out()
    out = []
    for c in range(k):
        top = np.argsort(-scores[c], kind="stable")[: config.n_terms]
        out.append([(str(vocab[t]), round(float(scores[c, t]), 6)) for t in top if scores[c, t] > 0])
    return out


def fit_topics(
    vectors: np.ndarray,
    texts: Sequence[str | None] | pl.Series,
    ids: Sequence[str] | pl.Series,
    config: TopicConfig | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cluster rows into topics: (assignments: row_id, cluster_id, similarity to its centroid;
    clusters: cluster_id, size, share, label, terms, term_scores, examples, example_ids, centroid)."""
    config = config or TopicConfig()
    texts = ["" if t is None else str(t) for t in (texts.to_list() if isinstance(texts, pl.Series) else texts)]
    ids = [str(i) for i in (ids.to_list() if isinstance(ids, pl.Series) else ids)]
    vectors = np.asarray(vectors)
    if not (len(texts) == len(ids) == len(vectors)):
        raise ValueError(
            f"fit_topics got {len(vectors)} vectors, {len(texts)} texts and {len(ids)} ids: they must align"
        )
    order = id_order(ids)
    if not is_id_ordered(order):
        # k-means samples and seeds by position: fit on the rows in their global order (any order of the same
        # rows gives the same topics), and hand the assignments back in the caller's order
        assignments, clusters = fit_topics(vectors[order], [texts[i] for i in order], [ids[i] for i in order], config)
        position = {row: i for i, row in enumerate(ids)}
        return assignments.sort(pl.col("row_id").replace_strict(position, return_dtype=pl.Int64)), clusters
    n = len(ids)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    if n == 0:
        return pl.DataFrame(schema=ASSIGNMENTS_SCHEMA), pl.DataFrame(schema=clusters_schema(dim))
    x = unit_rows(vectors)
    k = config.clusters_for(n)
    centroids, assign, sims = spherical_kmeans(
        x, k, niter=config.kmeans_iters, seed=config.seed, max_points_per_centroid=256, use_gpu=config.use_gpu
    )
    terms = ctfidf_terms(texts, assign, k, config)
    sizes = np.bincount(assign, minlength=k)
    rows = []
    for c in range(k):
        members = np.flatnonzero(assign == c)
        near = members[np.argsort(-sims[members], kind="stable")[: config.n_examples]]
        words = [t for t, _ in terms[c]]
        rows.append(
            {
                "cluster_id": c,
                "size": int(sizes[c]),
                "share": float(sizes[c] / n),
                "label": " / ".join(words[:3]) if words else f"topic {c}",
                "terms": words,
                "term_scores": [s for _, s in terms[c]],
                "examples": [texts[i][: config.example_chars] for i in near],
                "example_ids": [ids[i] for i in near],
                "centroid": centroids[c].tolist(),
            }
        )
    clusters = pl.DataFrame(rows, schema=clusters_schema(dim))
    assignments = pl.DataFrame({"row_id": ids, "cluster_id": assign, "similarity": sims}, schema=ASSIGNMENTS_SCHEMA)
    return assignments, clusters


def plot_topic_map(
    vectors: np.ndarray,
    assignments: pl.DataFrame,
    clusters: pl.DataFrame,
    path: Path | str,
    *,
    max_points: int = 5000,
    annotate: int = 15,
    seed: int = 0,
) -> Path:
    """A PNG of the topics in 2-D: PCA of the centroids (sized by share, largest labelled), with
    sampled rows projected on the same plane and coloured by topic.

    `vectors` are in the row order of `assignments`. Written atomically; returns `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    path = Path(path)
    x = unit_rows(vectors) if len(vectors) else np.zeros((0, 2), np.float32)
    if len(x) != assignments.height:
        raise ValueError(f"plot_topic_map got {len(x)} vectors for {assignments.height} assignments")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(x), size=min(len(x), max_points), replace=False)) if len(x) else np.zeros(0, int)
    labels = assignments["cluster_id"].to_numpy()[sample]
    centroids = clusters["centroid"].to_numpy().astype(np.float32) if clusters.height else np.zeros((0, x.shape[1]))
    fig = Figure(figsize=(10, 8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if len(sample) >= 2 and x.shape[1] >= 2:
        # axes from the centroids spread the topics apart; rows project onto the same plane
        basis = centroids if len(centroids) >= 3 else x[sample]
        pca = PCA(n_components=2, random_state=seed).fit(basis)
        pts, cen = pca.transform(x[sample]), pca.transform(centroids) if len(centroids) else np.zeros((0, 2))
        share = pca.explained_variance_ratio_
        ax.scatter(pts[:, 0], pts[:, 1], c=labels % 20, cmap="tab20", vmin=0, vmax=19, s=6, alpha=0.45, linewidths=0)
        sizes = clusters["share"].to_numpy() if clusters.height else np.zeros(0)
        cid = clusters["cluster_id"].to_numpy() if clusters.height else np.zeros(0, int)
        ax.scatter(
            cen[:, 0],
            cen[:, 1],
            c=cid % 20,
            cmap="tab20",
            vmin=0,
            vmax=19,
            s=60 + 2000 * sizes,
            edgecolors="black",
            linewidths=0.8,
        )
        for r in np.argsort(-sizes, kind="stable")[:annotate]:
            terms = clusters["terms"][int(r)].to_list()[:2]
            ax.annotate(
                f"{cid[r]}: {', '.join(terms) or 'no terms'}",
                (cen[r, 0], cen[r, 1]),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
                bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.7, lw=0),
            )
        of = "centroid" if basis is centroids else "row"
        ax.set_xlabel(f"PC1 ({share[0]:.0%} of {of} variance)")
        ax.set_ylabel(f"PC2 ({share[1]:.0%} of {of} variance)")
    else:
        ax.text(0.5, 0.5, "too few rows to map", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"Topic map: {assignments.height:,} rows ({len(sample):,} shown), {clusters.height} topics")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex}.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
