"""A user simulator whose engagement depends on the replies each arm gives: the engagement model that the
simulated A/B experiment (`evaluation.simulated_ab`) runs over.

It asks an *engagement model* how likely a user is to continue after a given reply; the simulated users act on
those probabilities.

The engagement model predicts `continued` (the user sent another message after the served reply) from the
user's last turn and the reply. Its backbone is deliberately unlike the reward models' (sentence embeddings
with a trained head, or a small Llama LM): TF-IDF character n-grams of the reply, word n-grams of the user
turn and two length features, under a logistic regression (scikit-learn), so a policy that learnt to please
its reward models is not graded by one of them. It learns from the same users they do, the training users of
every curated day up to the window (`pipeline.judge_data`: a few held-out users give too little to learn
from), and is validated on the window's held-out users (`validation`), whose rows and the replayed
conversations never reach it (`fit_user_simulator` drops `excluded_users` and `excluded_conversations`,
counted).

The simulator is itself an estimate: `UserSimulator.refits` refits it on bootstrap resamples of its training
users (whole users, with all their turns), whose spread of lifts the simulated readout reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.special import expit, logit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pipeline.digest import rows_digest
from pipeline.seeded_uniform import seeded_uniforms

STAGE = "user_simulator"
TURN_COLUMNS = ("user_hash", "conversation_id", "context", "reply", "continued")


@dataclass
class UserSimulatorConfig:
    reply_ngrams: tuple[int, int] = field(
        default=(2, 4), metadata={"help": "Character n-gram range (char_wb) of the reply features."}
    )
    context_ngrams: tuple[int, int] = field(
        default=(1, 2), metadata={"help": "Word n-gram range of the user-turn features."}
    )
    max_features: int = field(default=30_000, metadata={"help": "Vocabulary size of each TF-IDF vectorizer."})
    c: float = field(default=1.0, metadata={"help": "Inverse L2 regularisation strength of the logistic regression."})
    min_rows: int = field(
        default=50,
        metadata={
            "help": "Fewest training turns; with fewer the simulator is not trained and its readout insufficient."
        },
    )
    min_per_class: int = field(default=5, metadata={"help": "Fewest turns of each label (continued / not)."})
    holdout_fraction: float = field(
        default=0.2, metadata={"help": "Share of the simulator's users held out to report its AUC (split by user)."}
    )
    base_continue: float | None = field(
        default=0.6,
        metadata={
            "help": "Continue probability of a reply the engagement model scores at its training base rate; each "
            "reply keeps the model's odds ratio against that rate. Logged chat continues after nearly every turn "
            "(~98% in the replayed Chit-Chat, where only a conversation's last turn ends it), which would pin "
            "every probability near 1 and simulated depth at its cap. None uses the model's probabilities as is."
        },
    )
    p_max: float = field(
        default=0.95, metadata={"help": "Continue probabilities are clipped to [1 - p_max, p_max] (bounded depth)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the held-out user split and of the refits' resamples."})
    min_users: int = field(
        default=50,
        metadata={
            "help": "Fewest training users for the simulated readout to count: with fewer, its verdict is "
            "'insufficient' (it neither ships nor rejects), since its lifts describe those few people."
        },
    )
    refits: int = field(
        default=10,
        metadata={
            "help": "Refits on bootstrap resamples of the training users, whose spread of lifts is the "
            "simulator's own estimation error in the readout's interval; 0 leaves it out."
        },
    )

    def __post_init__(self) -> None:
        if self.min_users < 1 or self.refits < 0 or self.refits == 1:
            raise ValueError(
                f"min_users={self.min_users} must be >= 1 and refits={self.refits} 0 or >= 2 (defaults 50 and 10)"
            )
        for name in ("reply_ngrams", "context_ngrams"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name}={getattr(self, name)} must be (lo, hi) with 1 <= lo <= hi, e.g. (2, 4)")
        if self.min_rows < 2 or self.min_per_class < 1:
            raise ValueError("min_rows must be >= 2 and min_per_class >= 1")
        if not 0 <= self.holdout_fraction < 0.5:
            raise ValueError(f"holdout_fraction={self.holdout_fraction} must be in [0, 0.5), e.g. 0.2")
        if self.base_continue is not None and not 0 < self.base_continue < 1:
            raise ValueError(f"base_continue={self.base_continue} must be in (0, 1), e.g. 0.6, or None")
        if not 0.5 < self.p_max < 1:
            raise ValueError(f"p_max={self.p_max} must be in (0.5, 1), e.g. 0.95")


SIMULATOR_FIX = (
    "widen the generation's window of days (`window_days`) or let it read more earlier days (`max_earlier_days`, "
    "0 = every one)"
)


class TooFewTurns(ValueError):
    """The traffic offers the user simulator fewer usable turns than it is trained on: the A/B readout it would
    drive has no evidence (`evidence()`), and the generation goes on without it."""

    def __init__(self, rows: int, per_class: dict, config: UserSimulatorConfig, counters: dict[str, int]) -> None:
        self.rows, self.per_class, self.config, self.counters = rows, dict(per_class), config, dict(counters)
        super().__init__(
            f"the user simulator has {rows} usable turns ({self.per_class}) after dropping excluded users and "
            f"replayed conversations; it needs >= {config.min_rows} with >= {config.min_per_class} of each label: "
            + SIMULATOR_FIX
        )

    def evidence(self) -> dict:
        """The simulator's evidence document, as a trained one records it, marked not trained."""
        went_on, stopped = self.per_class.get(True, 0), self.per_class.get(False, 0)
        if self.rows < self.config.min_rows:
            reason = f"not trained: {self.rows} usable turns (minimum {self.config.min_rows})"
        else:
            least = "stopped" if stopped < went_on else "went on"
            reason = (
                f"not trained: {min(went_on, stopped)} turns after which the user {least} "
                f"(minimum {self.config.min_per_class})"
            )
        return {
            "trained": False,
            "turns": self.rows,
            "continued": went_on,
            "stopped": stopped,
            "min_rows": self.config.min_rows,
            "min_per_class": self.config.min_per_class,
            "sufficient": False,
            "reason": reason,
            "fix": SIMULATOR_FIX,
        }


def _length_features(texts: list[str]) -> sp.csr_matrix:
    n = np.array([len(t) for t in texts], dtype=np.float64)
    q = np.array(["?" in t for t in texts], dtype=np.float64)
    return sp.csr_matrix(np.c_[np.log1p(n) / 6.0, q])


class UserSimulator:
    """p(continue | user turn, reply) of a trained engagement model; `name` says what it is and what it saw."""

    def __init__(self, config: UserSimulatorConfig, reply_vec, context_vec, model, summary: dict, training=None):
        self.config, self.summary = config, summary
        self._reply_vec, self._context_vec, self._model = reply_vec, context_vec, model
        self.training = training  # the turns it learnt from, for refits on resampled users

    def evidence(self) -> dict:
        """Users and turns it learnt from, its held-out AUC, and whether that is enough (`min_users`)."""
        s, minimum = self.summary, self.config.min_users
        reason = None if s.get("users", 0) >= minimum else f"trained on {s.get('users', 0)} users (< {minimum})"
        return {
            "users": s.get("users"),
            "turns": s.get("rows"),
            "heldout_auc": s.get("heldout_auc"),
            "heldout_rows": s.get("heldout_rows"),
            "min_users": minimum,
            "sufficient": reason is None,
            "reason": reason,
        }

    def refits(self) -> list[UserSimulator]:
        """`config.refits` simulators, each fitted on a bootstrap resample of the training users (a resample
        with only one label is skipped: it cannot be fitted)."""
        frame, out = self.training, []
        if frame is None or self.config.refits == 0:
            return out
        users = frame["user_hash"].unique().sort()
        rng = np.random.default_rng(self.config.seed)
        by_user = frame.partition_by("user_hash", as_dict=True)
        for _ in range(self.config.refits):
            drawn = users.gather(rng.integers(0, users.len(), users.len()))
            rows = pl.concat([by_user[(u,)] for u in drawn.to_list()])
            if rows["continued"].n_unique() == 2:
                reply_vec, context_vec, model = _fit(rows, self.config)
                # re-centred on its own resample's base rate, as the simulator is on its data's
                summary = {**self.summary, "continued_rate": float(rows["continued"].mean())}
                out.append(UserSimulator(self.config, reply_vec, context_vec, model, summary))
        return out

    @property
    def name(self) -> str:
        s = self.summary
        lo, hi = self.config.reply_ngrams
        return (
            f"tfidf-char{lo}-{hi}+logreg engagement model ({s['users']} training users, {s['rows']} turns, "
            f"data sha256 {s['data_sha256'][:12]})"
        )

    def _features(self, contexts: list[str], replies: list[str]) -> sp.csr_matrix:
        return sp.hstack(
            [self._reply_vec.transform(replies), self._context_vec.transform(contexts), _length_features(replies)]
        ).tocsr()

    def p_continue(self, contexts: Iterable[str], replies: Iterable[str]) -> np.ndarray:
        contexts, replies = [c or "" for c in contexts], [r or "" for r in replies]
        if len(contexts) != len(replies):
            raise ValueError(f"{len(contexts)} contexts but {len(replies)} replies: pass one context per reply")
        if not replies:
            return np.zeros(0)
        p = self._model.predict_proba(self._features(contexts, replies))[:, 1]
        base, rate = self.config.base_continue, self.summary.get("continued_rate")
        if base is not None and rate is not None:
            p = expit(logit(np.clip(p, 1e-6, 1 - 1e-6)) - logit(rate) + logit(base))
        return np.clip(p, 1 - self.config.p_max, self.config.p_max)


def _held_users(users: pl.Series, fraction: float, seed: int) -> pl.Series:
    return pl.Series(seeded_uniforms(users.to_list(), str(seed))) < fraction


def fit_user_simulator(
    turns: pl.DataFrame,
    excluded_users: Iterable[str] = (),
    excluded_conversations: Iterable[str] = (),
    config: UserSimulatorConfig | None = None,
    validation: pl.DataFrame | None = None,
) -> tuple[UserSimulator, dict[str, int]]:
    """(simulator, counters) trained on `turns` (`TURN_COLUMNS`: one served reply per row, `context` the user
    turn before it, `continued` its label). Rows of `excluded_users` (users it is validated or judged on) and
    of `excluded_conversations` (the conversations the readout will replay) never reach the model; the counters
    say how many rows each rule dropped. Its held-out AUC is measured on `validation` (turns of users it never
    saw) when given, else on a share of its own users (`holdout_fraction`)."""
    config = config or UserSimulatorConfig()
    missing = [c for c in TURN_COLUMNS if c not in turns.columns]
    if missing:
        raise ValueError(f"simulator turns lack the columns {missing}: pass {list(TURN_COLUMNS)}")
    counters = {"rows_read": turns.height}
    frame = turns.select(TURN_COLUMNS)
    rules = [
        ("unlabelled", pl.col("continued").is_null() | pl.col("reply").is_null() | pl.col("user_hash").is_null()),
        ("excluded_user", pl.col("user_hash").is_in(list(excluded_users))),
        ("replayed_conversation", pl.col("conversation_id").is_in(list(excluded_conversations))),
    ]
    for reason, rule in rules:
        dropped = frame.filter(rule.fill_null(False))
        counters[f"dropped_{reason}"] = dropped.height
        frame = frame.filter(~rule.fill_null(False))
    frame = frame.with_columns(pl.col("context").fill_null(""), pl.col("continued").cast(pl.Boolean))
    counts = frame["continued"].value_counts()
    per_class = dict(zip(counts["continued"].to_list(), counts["count"].to_list()))
    if frame.height < config.min_rows or min(per_class.get(True, 0), per_class.get(False, 0)) < config.min_per_class:
        raise TooFewTurns(frame.height, per_class, config, counters)
    if validation is not None:
        train = frame
        test = (
            validation.select(TURN_COLUMNS)
            .filter(
                pl.col("continued").is_not_null()
                & pl.col("reply").is_not_null()
                & ~pl.col("user_hash").is_in(train["user_hash"].unique().implode())
            )
            .with_columns(pl.col("context").fill_null(""), pl.col("continued").cast(pl.Boolean))
        )
    else:
        held = _held_users(frame["user_hash"], config.holdout_fraction, config.seed)
        train, test = frame.filter(~held), frame.filter(held)
    if train["continued"].n_unique() < 2:
        train, test = frame, frame.head(0)

    auc, fitted = None, None
    if test.height and test["continued"].n_unique() == 2:
        fitted = _fit(train, config)
        probe = UserSimulator(config, *fitted, {})
        auc = float(roc_auc_score(test["continued"].to_numpy(), probe.p_continue(test["context"], test["reply"])))
    # the simulator used by the readout learns from every kept user; the held-out AUC describes its recipe
    reply_vec, context_vec, model = fitted if fitted is not None and train is frame else _fit(frame, config)
    summary = {
        "rows": frame.height,
        "users": frame["user_hash"].n_unique(),
        "continued_rate": float(frame["continued"].mean()),
        "heldout_auc": auc,
        "heldout_rows": test.height,
        "heldout_users": test["user_hash"].n_unique(),
        "data_sha256": rows_digest(frame.select("context", "reply", "continued").iter_rows()),
    }
    counters["rows_used"] = frame.height
    return UserSimulator(config, reply_vec, context_vec, model, summary, frame), counters


def _fit(
    rows: pl.DataFrame, config: UserSimulatorConfig
) -> tuple[TfidfVectorizer, TfidfVectorizer, LogisticRegression]:
    """The engagement model's recipe on `rows`: both vectorizers and the logistic regression."""
    reply_vec = TfidfVectorizer(
        analyzer="char_wb", ngram_range=config.reply_ngrams, max_features=config.max_features, sublinear_tf=True
    )
    context_vec = TfidfVectorizer(
        analyzer="word", ngram_range=config.context_ngrams, max_features=config.max_features, sublinear_tf=True
    )
    replies, contexts = rows["reply"].to_list(), rows["context"].to_list()
    x = sp.hstack(
        [reply_vec.fit_transform(replies), context_vec.fit_transform(contexts), _length_features(replies)]
    ).tocsr()
    model = LogisticRegression(C=config.c, max_iter=1000).fit(x, rows["continued"].to_numpy())
    return reply_vec, context_vec, model


def turns_from_prompts(prompts: pl.DataFrame) -> pl.DataFrame:
    """Simulator turns (`TURN_COLUMNS`) from static prompts: the user turn, the served reply and whether the user
    continued after it."""
    return prompts.select(
        pl.col("user_hash").cast(pl.Utf8),
        pl.col("conversation_id").cast(pl.Utf8),
        pl.col("last_user").alias("context"),
        pl.col("served_response").alias("reply"),
        pl.col("continued"),
    )
