"""A user simulator whose engagement depends on the replies each arm gives: an A/B readout that reflects the model.

The planted-lift simulator (`evaluation.ab_simulator`) plants a lift that does not depend on the models at
all; it stays as the readout's calibration check. This one asks an *engagement model* how likely a user is
to continue after a given reply, and lets simulated users act on those probabilities.

The engagement model predicts `continued` (the user sent another message after the served reply) from the
user's last turn and the reply. Its backbone is deliberately unlike the reward models' (sentence embeddings
with a trained head, or a small Llama LM): TF-IDF character n-grams of the reply, word n-grams of the user
turn and two length features, under a logistic regression (scikit-learn), so a policy that learnt to please
its reward models is not graded by one of them. It learns from the same users they do, the training users of
every curated day up to the window (`pipeline.judge_data`: a few held-out users give too little to learn
from), and is validated on the window's held-out users (`validation`), whose rows and the replayed
conversations never reach it (`fit_user_simulator` drops `excluded_users` and `excluded_conversations`,
counted).

The simulated experiment (`simulate_arm_users`): each user is assigned to treatment with probability
`treatment_share`, exposed on one of the first `exposure_days` days, and lands in one replayed held-out
conversation drawn uniformly. They see their arm's reply there and continue with its probability p (the
engagement model's score, re-centred so a reply scored at the logs' base rate continues with probability
`base_continue`: logged chat continues after nearly every turn): that first continuation is one message, and makes them *engaged* (breadth). An
engaged user keeps talking with the same probability p after every turn, so sends a geometric number of
messages with mean 1 / (1 - p) (capped at `max_messages`): the depth. So breadth is the mean of p over an
arm's replies and depth the mean of 1 / (1 - p) over its engaged users: both move only when the replies do.
Identical arms give identical distributions, so the readout's false-positive rate is its nominal alpha.

The simulator is itself an estimate: another sample of its training users would give other probabilities and
another lift. `simulated_readout` refits it on `refits` bootstrap resamples of its training users (whole users,
with all their turns) and reads the spread of the lifts they imply (`model_ci_*`); `total_ci_*` adds that
variance to the readout's own and the replayed prompts' (all three are independent sources of error). A
simulator that learnt from fewer than `min_users` users gives the readout insufficient evidence
(`evidence()`): its verdict is then `insufficient`, which neither ships nor rejects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats
from scipy.special import expit, logit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from evaluation import ab_test
from evaluation.ab_simulator import ExperimentConfig, experiment_logs
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
    min_rows: int = field(default=50, metadata={"help": "Fewest training turns; fewer fail with a clear error."})
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


@dataclass
class SimulatedAbConfig(ExperimentConfig):
    max_messages: int = field(default=60, metadata={"help": "Cap on the messages one simulated user sends."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_messages < 1:
            raise ValueError(f"max_messages={self.max_messages} must be >= 1")


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
        raise ValueError(
            f"the user simulator has {frame.height} usable turns ({per_class}) after dropping excluded users and "
            f"replayed conversations; it needs >= {config.min_rows} with >= {config.min_per_class} of each "
            "label: widen the generation's window of days or let it read more earlier days (`max_earlier_days`, "
            "0 = every one)"
        )
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


def simulate_arm_users(
    p_control: np.ndarray, p_treatment: np.ndarray, config: SimulatedAbConfig | None = None, reps: int | None = None
) -> dict[str, np.ndarray]:
    """Per-user `treated`, `first_day`, `conversation` (index into the arm's replies), `p` and `messages` of the
    simulated experiment (module docstring); `p_control[i]` and `p_treatment[i]` score the two arms' replies
    to replayed conversation i. With `reps`, arrays gain a leading axis of independent experiments."""
    c = config or SimulatedAbConfig()
    p_control, p_treatment = np.asarray(p_control, np.float64), np.asarray(p_treatment, np.float64)
    if p_control.shape != p_treatment.shape or p_control.ndim != 1 or not p_control.size:
        raise ValueError("p_control and p_treatment must score the same non-empty list of replayed conversations")
    if not ((0 <= p_control) & (p_control < 1) & (0 <= p_treatment) & (p_treatment < 1)).all():
        raise ValueError("continue probabilities must lie in [0, 1)")
    rng = np.random.default_rng(c.seed)
    shape = (c.n_users,) if reps is None else (reps, c.n_users)
    treated = rng.random(shape) < c.treatment_share
    first = rng.integers(0, c.exposure_days, shape)
    conversation = rng.integers(0, p_control.size, shape)
    p = np.where(treated, p_treatment[conversation], p_control[conversation])
    engaged = rng.random(shape) < p
    # messages until the first turn they do not continue after: geometric with stop probability 1 - p
    messages = np.where(engaged, np.minimum(rng.geometric(1 - p), c.max_messages), 0)
    return {
        "treated": treated,
        "first_day": first,
        "conversation": conversation,
        "p": p,
        "messages": messages,
        "rng": rng,
    }


def simulated_logs(
    p_control: np.ndarray, p_treatment: np.ndarray, config: SimulatedAbConfig | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(ab_exposures, ab_events) of one simulated experiment, with the logging noise the readout must ignore."""
    c = config or SimulatedAbConfig()
    return experiment_logs(simulate_arm_users(p_control, p_treatment, c), c)


def _lift_statistics(max_messages: int):
    """Breadth and depth lift of treatment over control from per-conversation continue probabilities, along
    `axis` (so scipy's bootstrap can evaluate many resamples at once)."""

    def depth(p: np.ndarray, axis: int) -> np.ndarray:
        # E[min(G, m)] for G geometric with stop probability 1 - p is (1 - p^m) / (1 - p), weighted by P(engaged) = p
        return (p * (1 - p**max_messages) / (1 - p)).sum(axis=axis) / p.sum(axis=axis)

    return {
        "breadth": lambda pc, pt, axis=-1: pt.mean(axis=axis) / pc.mean(axis=axis) - 1,
        "depth": lambda pc, pt, axis=-1: depth(pt, axis) / depth(pc, axis) - 1,
    }


def expected_lifts(p_control: np.ndarray, p_treatment: np.ndarray, max_messages: int = 60) -> dict[str, float]:
    """The population breadth and depth lifts the simulated experiment estimates (what an infinite one reads)."""
    pc, pt = np.asarray(p_control, np.float64), np.asarray(p_treatment, np.float64)
    return {m: float(f(pc, pt)) for m, f in _lift_statistics(max_messages).items()}


def prompt_intervals(
    p_control: np.ndarray,
    p_treatment: np.ndarray,
    max_messages: int = 60,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, tuple[float | None, float | None]]:
    """Per metric, the (1 - alpha) percentile interval of the expected lift over the replayed conversations,
    resampled in pairs (scipy.stats.bootstrap): how far the lift could move had other held-out conversations been
    replayed. (None, None) with fewer than two conversations or no resamples."""
    pc, pt = np.asarray(p_control, np.float64), np.asarray(p_treatment, np.float64)
    if pc.size < 2 or n_resamples < 1:
        return {m: (None, None) for m in _lift_statistics(max_messages)}
    out = {}
    for metric, statistic in _lift_statistics(max_messages).items():
        res = stats.bootstrap(
            (pc, pt),
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=1 - alpha,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        out[metric] = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    return out


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


def last_user_turn(context_json: str | None) -> str:
    """The last user message of a JSON list of chat messages (the eval replies' `context`)."""
    messages = json.loads(context_json) if context_json else []
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


@dataclass
class ArmReplies:
    """Each arm's reply to the same replayed held-out conversations, with the user turn they answer."""

    conversation: list[str]
    context: list[str]
    control: list[str]
    treatment: list[str]

    @classmethod
    def from_responses(cls, responses: pl.DataFrame, control: str, treatment: str) -> ArmReplies:
        """From rows (prompt_id, policy, context, response): the prompts both policies answered, in id order."""
        arms = []
        for policy in (control, treatment):
            arm = responses.filter(pl.col("policy") == policy).unique("prompt_id", keep="first")
            arms.append(arm.select("prompt_id", "context", pl.col("response").alias(policy)))
        both = arms[0].join(arms[1].drop("context"), on="prompt_id", how="inner").sort("prompt_id")
        if both.is_empty():
            raise ValueError(
                f"no replayed conversation has replies of both {control!r} and {treatment!r}: run the offline "
                "evaluation of this generation first"
            )
        return cls(
            conversation=both["prompt_id"].to_list(),
            context=[last_user_turn(c) for c in both["context"]],
            control=both[control].fill_null("").to_list(),
            treatment=both[treatment].fill_null("").to_list(),
        )


@dataclass
class SimulatedReadout:
    """The A/B logs simulated from `model` (its name), their readout, the per-conversation continue
    probabilities and the population lifts those imply (`expected`)."""

    model: str
    exposures: pl.DataFrame
    events: pl.DataFrame
    readout: ab_test.AbReadout
    scores: pl.DataFrame
    expected: dict[str, float]
    evidence: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"simulated from {self.model}"


def simulated_readout(
    simulator: UserSimulator, replies: ArmReplies, experiment: SimulatedAbConfig, analysis: ab_test.AbConfig
) -> SimulatedReadout:
    """Score both arms' replies, simulate the experiment on those probabilities and read it out like real logs
    (breadth and depth lifts, delta-method and bootstrap intervals, sample-ratio test)."""
    p_c = simulator.p_continue(replies.context, replies.control)
    p_t = simulator.p_continue(replies.context, replies.treatment)
    exposures, events = simulated_logs(p_c, p_t, experiment)
    readout = ab_test.ab_readout(exposures, events, analysis)
    intervals = prompt_intervals(p_c, p_t, experiment.max_messages, analysis.n_bootstrap, analysis.alpha, analysis.seed)
    found = pl.DataFrame(
        [{"metric": m, "prompt_ci_low": lo, "prompt_ci_high": hi} for m, (lo, hi) in intervals.items()],
        schema={"metric": pl.Utf8, "prompt_ci_low": pl.Float64, "prompt_ci_high": pl.Float64},
    )
    refitted = [
        expected_lifts(
            r.p_continue(replies.context, replies.control),
            r.p_continue(replies.context, replies.treatment),
            experiment.max_messages,
        )
        for r in simulator.refits()
    ]
    found = found.join(_model_error(refitted, analysis.alpha), on="metric", how="left")
    lifts = readout.lifts.update(found, on="metric")
    readout = replace(readout, lifts=lifts.with_columns(_total_interval(lifts, analysis.alpha)))
    scores = pl.DataFrame({"prompt_id": replies.conversation, "p_continue_control": p_c, "p_continue_treatment": p_t})
    evidence = {**simulator.evidence(), "refits": len(refitted), "conversations": len(replies.conversation)}
    return SimulatedReadout(
        simulator.name, exposures, events, readout, scores, expected_lifts(p_c, p_t, experiment.max_messages), evidence
    )


def _model_error(refitted: list[dict[str, float]], alpha: float) -> pl.DataFrame:
    """Per metric, the percentile interval and standard deviation of the lifts the refitted simulators imply."""
    rows = []
    for metric in ab_test.METRICS:
        values = np.array([r[metric] for r in refitted if np.isfinite(r[metric])])
        if values.size < 2:
            rows.append({"metric": metric})
            continue
        lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        rows.append({"metric": metric, "model_ci_low": lo, "model_ci_high": hi, "model_sd": float(values.std(ddof=1))})
    schema = {"metric": pl.Utf8, "model_ci_low": pl.Float64, "model_ci_high": pl.Float64, "model_sd": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def _total_interval(lifts: pl.DataFrame, alpha: float) -> list[pl.Expr]:
    """The lift's interval with every source of error: the simulated users' (delta method), the replayed
    prompts' and the simulator's own, as independent variances (each read off its interval or deviation)."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    prompt_se = (pl.col("prompt_ci_high") - pl.col("prompt_ci_low")).fill_null(0.0) / (2 * z)
    model_se = pl.col("model_sd").fill_null(0.0) if "model_sd" in lifts.columns else pl.lit(0.0)
    se = (pl.col("delta_se") ** 2 + prompt_se**2 + model_se**2).sqrt()
    return [(pl.col("lift") - z * se).alias("total_ci_low"), (pl.col("lift") + z * se).alias("total_ci_high")]
