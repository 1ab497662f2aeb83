"""Offline evaluation of a policy against its parent: the numbers behind the release gates.

Both policies answer the same held-out prompts (the two eval slices of a prompt pool, the steerability
suite and, when given, the held-out half of the IFEval prompts, greedily) with the same seed, so the replies are
paired. This generation's
reward models judge the pairs (win rates per slice with bootstrap CIs), the steerability checkers score
the suite, the style monitors compare the replies' artifacts, and the release gates read all of it.

Any two checkpoints can be evaluated on their own, as the training stages are run:

    python -m evaluation.offline_eval --new_policy models/gen-1/grpo --parent_policy models/gen-0/base \\
        --prompts data/lake/prompts --pointwise models/gen-1/reward_pointwise \\
        --pairwise models/gen-1/reward_pairwise --output_dir eval/gen-1

It prints the gates and writes the tables (`win_rates.parquet`, `steerability.parquet`, `style.parquet`,
`fluency.parquet`, `records.parquet`, `responses.parquet`, `gates.parquet`, `drops.parquet`) into `output_dir`. The
`offline_eval` asset runs the same steps and writes the tables into the lake.

Scoring lives in the evaluation modules (winrate, steerability, style_monitor, fluency, ifeval, release_gates); this
entry point samples the replies, through `engine` as candidate generation does, and loads the judging reward
models through training's public loading API.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from engine.cards import HELDOUT, TEST, build_prompts, load_suite
from engine.policy import PolicyConfig
from engine.sampling import CandidateConfig, sample_replies, valid_prompts
from evaluation import fluency, gate_config, release_gates
from evaluation.comparison import SLICES, Evaluation, gate_table, score_ifeval
from evaluation.greedy_replies import keep_replies, read_replies, reply_key
from evaluation.ifeval_heldout import IFEvalSplitConfig, chat_contexts, eval_prompt_texts, heldout_ifeval
from pipeline.config_fields import forwarded
from pipeline.prompts import chat_messages
from pipeline.seeded_uniform import seeded_uniforms

STAGE = "offline_eval"
GATES = {
    "win_rate_ceiling": "Win rate against the parent at most the ceiling on every slice and judge (warns above "
    "the warning level): a larger win is read as reward hacking, not progress.",
    "slice_divergence": "|eval_user - eval_internal| win rate within the limit for every judge.",
    "steerability_regression": "The instruction-following rate on the steerability suite does not drop more than "
    "the tolerance (a rising violation rate of one instruction type warns).",
    "artifact_drift": "Length, list, emoji, stock-phrase and refusal rates of the eval replies stay in their bands "
    "around the parent's.",
    "fluency_regression": "The new generation's replies are not less fluent than the parent's: mean SLOR under a "
    "reference language model (SmolLM2-135M-Instruct, independent of the policy and the judges), paired interval "
    "of new - parent not entirely below -`fluency_margin`; insufficient without the reference model.",
    "ifeval_regression": "With IFEval prompts configured: instruction-strict and prompt-strict accuracy on the "
    "held-out IFEval half not below the parent's with the whole paired interval below -`ifeval_margin`; "
    "insufficient below `min_ifeval_prompts` prompts.",
    "train_eval_disjoint": "No eval prompt (held-out IFEval prompts included) is among this generation's training "
    "prompts (SFT, preference and RL rows, candidate prompts), by id or by normalised text.",
    "evidence_rule": "The release rule: no gate failed, and at least `min_decided_gates` gates had the evidence to "
    "decide (a gate with insufficient evidence neither passes nor blocks on its own).",
}
_GATE_FIELDS = (
    "win_rate_error",
    "win_rate_warn",
    "slice_divergence_max",
    "slice_divergence_z",
    "steerability_tolerance",
    "max_train_eval_overlap",
    "min_slice_users",
    "judge_margin",
    "min_judge_heldout",
    "min_decided_gates",
    "min_artifact_replies",
    "fluency_margin",
    "min_fluency_replies",
    "ifeval_margin",
    "min_ifeval_prompts",
)


@dataclass
class OfflineEvalConfig:
    """How replies are sampled and judged, and the gates' limits (defaults of `gate_config.GateConfig`)."""

    eval_prompts: int = field(default=150, metadata={"help": "Held-out prompts per slice judged."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest sampled reply, in tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the replies (both policies)."})
    seed: int = field(default=0, metadata={"help": "Seed of prompt choice, sampling and bootstraps; shared by both."})
    steerability_samples: int = field(
        default=8, metadata={"help": "Replies per steerability prompt and policy (more = a less noisy rate)."}
    )
    steerability_suite: str | None = field(
        default=None, metadata={"help": "Steerability suite JSON; None uses the shipped suite."}
    )
    test_cards: bool = field(
        default=True,
        metadata={
            "help": "Also answer the suite's test cards (as many samples each): the report and the benches read "
            "them, no gate, threshold or choice of parent does, so they measure learning no decision selected for."
        },
    )
    bootstrap_resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples of each win-rate interval."})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when present), 'cpu' or 'cuda'."})
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads while sampling; None keeps torch's default (one is fastest for a tiny "
            "policy on a busy machine)."
        },
    )
    sampling_backend: str = forwarded(CandidateConfig, "backend")
    ifeval_path: str | None = field(
        default=None,
        metadata={
            "help": "IFEval input JSONL (google-research's instruction_following_eval `input_data.jsonl`, or a file "
            "of its shape) whose held-out half both policies answer and the IFEval gate reads; None skips it (the "
            "tiny policy cannot follow IFEval's instructions)."
        },
    )
    ifeval_max_prompts: int = field(
        default=100,
        metadata={
            "help": "Held-out IFEval prompts answered: a seeded sample of the half (`evaluation.ifeval_heldout`)."
        },
    )
    ifeval_max_new_tokens: int = field(
        default=320,
        metadata={
            "help": "Longest IFEval reply, in tokens. IFEval replies are greedy, as its reference protocol: both "
            "policies' replies are then deterministic, and the paired interval is over the prompts."
        },
    )
    reply_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder where greedy IFEval replies are kept by the weights, engine and settings that wrote "
            "them: a policy answers once as the new generation and is read back as the next one's parent. None: "
            "not kept."
        },
    )
    ifeval_heldout_fraction: float = forwarded(IFEvalSplitConfig, "heldout_fraction")
    ifeval_split_salt: str = forwarded(IFEvalSplitConfig, "salt")
    win_rate_error: float = forwarded(gate_config.GateConfig, "win_rate_error")
    win_rate_warn: float = forwarded(gate_config.GateConfig, "win_rate_warn")
    slice_divergence_max: float = forwarded(gate_config.GateConfig, "slice_divergence_max")
    slice_divergence_z: float = forwarded(gate_config.GateConfig, "slice_divergence_z")
    steerability_tolerance: float = forwarded(gate_config.GateConfig, "steerability_tolerance")
    max_train_eval_overlap: int = forwarded(gate_config.GateConfig, "max_train_eval_overlap")
    min_slice_users: int = forwarded(gate_config.GateConfig, "min_slice_users")
    judge_margin: float = forwarded(gate_config.GateConfig, "judge_margin")
    min_judge_heldout: int = forwarded(gate_config.GateConfig, "min_judge_heldout")
    min_decided_gates: int = forwarded(gate_config.GateConfig, "min_decided_gates")
    measure_fluency: bool = field(
        default=True,
        metadata={
            "help": "Score the eval replies' fluency under the reference model and gate on it "
            "(`fluency_regression`); False skips both."
        },
    )
    fluency_reference_model: str = forwarded(fluency.FluencyConfig, "reference_model")
    fluency_on_missing: str = forwarded(fluency.FluencyConfig, "on_missing")
    min_artifact_replies: int = forwarded(gate_config.GateConfig, "min_artifact_replies")
    fluency_margin: float = forwarded(gate_config.GateConfig, "fluency_margin")
    min_fluency_replies: int = forwarded(gate_config.GateConfig, "min_fluency_replies")
    ifeval_margin: float = forwarded(gate_config.GateConfig, "ifeval_margin")
    min_ifeval_prompts: int = forwarded(gate_config.GateConfig, "min_ifeval_prompts")
    sample_prompts: int = field(
        default=3,
        metadata={"help": "Held-out card prompts and pool prompts (each) whose replies the report shows side by side."},
    )

    def __post_init__(self) -> None:
        if self.steerability_samples < 1:
            raise ValueError(f"steerability_samples={self.steerability_samples} must be >= 1 (default 8)")
        if self.eval_prompts < 1:
            raise ValueError(f"eval_prompts={self.eval_prompts} must be >= 1 (default 150)")
        if self.sample_prompts < 0:
            raise ValueError(f"sample_prompts={self.sample_prompts} must be >= 0 (default 3)")
        if self.ifeval_max_prompts < 1 or self.ifeval_max_new_tokens < 1:
            raise ValueError("ifeval_max_prompts and ifeval_max_new_tokens must be >= 1 (defaults 100 and 320)")
        if self.ifeval_path is not None and not Path(self.ifeval_path).is_file():
            raise ValueError(
                f"ifeval_path={self.ifeval_path!r} is not a file: point it at IFEval's input_data.jsonl (JSONL, "
                "gzipped or not) or leave it unset to skip IFEval"
            )
        self.gate_config()  # fails fast on bad gate limits
        self.fluency_config()
        self.ifeval_split()

    def ifeval_split(self) -> IFEvalSplitConfig:
        return IFEvalSplitConfig(heldout_fraction=self.ifeval_heldout_fraction, salt=self.ifeval_split_salt)

    def fluency_config(self) -> fluency.FluencyConfig:
        """The fluency measure: the reference model on the CPU threads of sampling, the bootstraps' seed."""
        return fluency.FluencyConfig(
            reference_model=self.fluency_reference_model,
            on_missing=self.fluency_on_missing,
            cpu_threads=self.cpu_threads,
            n_resamples=self.bootstrap_resamples,
            seed=self.seed,
        )

    def gate_config(self) -> gate_config.GateConfig:
        return gate_config.GateConfig(slices=SLICES, **{k: getattr(self, k) for k in _GATE_FIELDS})


@dataclass
class OfflineEvalRun(OfflineEvalConfig):
    """The command line: what to compare, on which prompts, judged by which reward models."""

    new_policy: str | None = field(default=None, metadata={"help": "The policy under test (a model folder)."})
    parent_policy: str | None = field(default=None, metadata={"help": "The policy it is compared with."})
    prompts: str | None = field(
        default=None,
        metadata={"help": "Parquet file or folder of the `prompts` table (with `split`); its eval slices are used."},
    )
    pointwise: str | None = field(default=None, metadata={"help": "Folder of the pointwise reward model (judge)."})
    pairwise: str | None = field(default=None, metadata={"help": "Folder of the pairwise reward model (judge)."})
    training_prompts: str | None = field(
        default=None,
        metadata={"help": "Parquet of trained-on (prompt_id, text) for the train/eval gate; None skips that gate."},
    )
    output_dir: str = field(default="offline_eval", metadata={"help": "Where the result tables are written."})

    def require_inputs(self) -> None:
        missing = [
            n for n in ("new_policy", "parent_policy", "prompts", "pointwise", "pairwise") if not getattr(self, n)
        ]
        if missing:
            raise ValueError(f"set {', '.join('--' + m for m in missing)} (see --help)")


# ---- inputs -----------------------------------------------------------------------------------------------


def select_eval_prompts(pool: pl.DataFrame, per_slice: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Up to `per_slice` held-out prompts per slice, spread over as many users as the slice has: every user's
    first prompt comes before anyone's second (a prompt's place within its user, and users among themselves, are
    drawn by a seeded hash of the ids, so a run picks the same prompts). The win-rate intervals resample users,
    and the release gates count them: a cap filled by a few heavy users would judge a generation on those few.
    Prompts that do not end in a user turn are returned as drops."""
    held = pool.filter(pl.col("split").is_in(SLICES))
    usable, drops = valid_prompts(held, stage=STAGE)
    # without a user column every prompt is its own user
    user = pl.col("user_hash").fill_null(pl.col("prompt_id")) if "user_hash" in usable.columns else pl.col("prompt_id")
    ranked = usable.with_columns(
        pl.Series("_rank", seeded_uniforms(usable["prompt_id"].to_list(), str(seed))), user.alias("_user")
    )
    users = ranked.select("_user").unique()
    ranked = ranked.join(
        users.with_columns(pl.Series("_user_rank", seeded_uniforms(users["_user"].to_list(), f"user:{seed}"))),
        on="_user",
    ).with_columns(pl.col("_rank").rank("ordinal").over("split", "_user").alias("_turn"))
    chosen = (
        ranked.sort("split", "_turn", "_user_rank", "_rank")
        .group_by("split", maintain_order=True)
        .head(per_slice)
        .drop("_rank", "_user", "_user_rank", "_turn")
    )
    return chosen.sort("split", "prompt_id"), drops


def trained_prompts(
    dataset_ids: dict[str, list[str]], candidate_prompts: pl.DataFrame, pool: pl.DataFrame
) -> pl.DataFrame:
    """(prompt_id, text) of everything a generation trained on: the prompt ids of its datasets (name -> ids;
    SFT is required) and its candidate prompts; texts come from the pool and the candidate prompts."""
    if "sft" not in dataset_ids:
        raise ValueError(
            "no SFT rows: materialize sft_dataset first (the train/eval gate cannot be checked without it)"
        )
    ids = {i for rows in dataset_ids.values() for i in rows if i is not None}
    texts = [pool]
    if candidate_prompts.height:
        ids |= set(candidate_prompts["prompt_id"].to_list())
        texts.append(candidate_prompts)
    known = pl.concat([t.select("prompt_id", "text") for t in texts if t.height], how="vertical_relaxed").unique(
        "prompt_id"
    )
    frame = pl.DataFrame({"prompt_id": sorted(ids)}, schema={"prompt_id": pl.Utf8})
    return frame.join(known, on="prompt_id", how="left")


def steerability_prompts(config: OfflineEvalConfig, split: str = HELDOUT) -> pl.DataFrame:
    """The prompts of the suite's `split` cards (the held-out ones the gates read, or the test ones), each repeated
    `steerability_samples` times (ids suffixed #k)."""
    base = build_prompts(load_suite(config.steerability_suite), split)
    return pl.concat(
        [
            base.with_columns(pl.format("{}#{}", "prompt_id", pl.lit(k)).alias("prompt_id"))
            for k in range(config.steerability_samples)
        ]
    )


def heldout_ifeval_inputs(config: OfflineEvalConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The held-out IFEval prompts both policies answer (the seeded sample of `config.ifeval_path`'s held-out
    half), and the file's unreadable lines as drops."""
    from evaluation.ifeval_files import read_inputs

    every, drops = read_inputs(config.ifeval_path)
    return heldout_ifeval(every, config.ifeval_max_prompts, config.ifeval_split()), drops


def reply_contexts(evals: pl.DataFrame, steer: pl.DataFrame, test: pl.DataFrame | None = None) -> list[list[dict]]:
    """Chat messages of every prompt both policies answer, in the order `Evaluation` reads the replies: the eval
    prompts, the held-out cards, the test cards."""
    contexts = [
        chat_messages(r["system"], r["history"]) for r in evals.select("system", "history").iter_rows(named=True)
    ]
    for cards in (steer, test if test is not None else steer.head(0)):
        contexts += [chat_messages(s, list(m)) for s, m in zip(cards["system"], cards["messages"].to_list())]
    return contexts


def sampling_config(
    config: OfflineEvalConfig, max_new_tokens: int | None = None, greedy: bool = False
) -> CandidateConfig:
    """One reply per context, seeded by `config.seed`; `max_new_tokens` overrides the config's; `greedy` decodes
    greedily (IFEval's protocol)."""
    return CandidateConfig(
        num_samples=1,
        max_new_tokens=max_new_tokens or config.max_new_tokens,
        temperature=config.temperature,
        seed=config.seed,
        device=config.device,
        cpu_threads=config.cpu_threads,
        backend=config.sampling_backend,
        greedy=greedy,
    )


def sample_policy_replies(
    policy: str,
    contexts: list[list[dict]],
    config: OfflineEvalConfig,
    segments: list[int] | None = None,
    *,
    max_new_tokens: int | None = None,
    greedy: bool = False,
) -> tuple[list[str], list[int], dict]:
    """One reply per context from `policy` (a model folder or name) under `sampling_config`, with its token count;
    each of `segments` (consecutive parts of `contexts`) is sampled as if alone (see `sample_replies`)."""
    cfg = sampling_config(config, max_new_tokens, greedy)
    texts, n_tokens, stats = sample_replies(
        PolicyConfig(model_name_or_path=policy, device=cfg.device, cpu_threads=cfg.cpu_threads),
        contexts,
        cfg,
        segments,
    )
    return [t[0] for t in texts], [n[0] for n in n_tokens], stats


def ifeval_replies(policy: str, contexts: list[list[dict]], config: OfflineEvalConfig) -> tuple[list[str], dict]:
    """`policy`'s greedy replies to the IFEval contexts: read back from `config.reply_cache_dir` when the same
    weights answered them under the same settings before (as the previous generation), else sampled and kept."""
    cfg = sampling_config(config, config.ifeval_max_new_tokens, greedy=True)
    settings = {k: v for k, v in asdict(cfg).items() if k != "cpu_threads"}
    key = reply_key(policy, contexts, settings) if config.reply_cache_dir else None
    kept = read_replies(config.reply_cache_dir, key, len(contexts)) if key else None
    if kept is not None:
        return kept[0], {"read_back": True, "tokens_per_s": None}
    replies, n_tokens, stats = sample_policy_replies(
        policy, contexts, config, max_new_tokens=config.ifeval_max_new_tokens, greedy=True
    )
    if key:
        keep_replies(config.reply_cache_dir, key, replies, n_tokens)
    return replies, {**stats, "read_back": False}


# ---- one run ----------------------------------------------------------------------------------------------


@dataclass
class OfflineEvalResult:
    evaluation: Evaluation
    gates: dict[str, gate_config.GateResult]
    records: pl.DataFrame
    drops: pl.DataFrame
    ifeval: pl.DataFrame | None
    tokens_per_s: dict[str, Any]
    samples: pl.DataFrame | None = None
    # per role: the engine that sampled it and the digest of the weights it served
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    # new - parent on the held-out IFEval prompts (`ifeval_heldout.paired_differences`)
    ifeval_differences: pl.DataFrame | None = None

    def tables(self) -> dict[str, pl.DataFrame]:
        """The result tables by their lake names."""
        ev = self.evaluation
        out = {
            "eval_records": self.records,
            "eval_responses": ev.responses(),
            "eval_win_rates": ev.wr.summary,
            "eval_steerability": ev.steer_summary,
            # the test cards: read by the report and the benches only
            **({"eval_steerability_test": ev.test_summary} if ev.test_summary.height else {}),
            "eval_style": ev.style,
            "release_gates": gate_table(self.gates),
        }
        if self.ifeval is not None:
            out["eval_ifeval"] = self.ifeval
        if self.ifeval_differences is not None:
            out["eval_ifeval_difference"] = self.ifeval_differences
        if self.samples is not None:
            out["eval_samples"] = self.samples
        if ev.fluency_summary is not None:
            out["eval_fluency"] = ev.fluency_summary
        return out


def evaluate(
    generation: str,
    policies: dict[str, str],
    names: dict[str, str],
    pool: pl.DataFrame,
    judges: tuple[Any, Any],
    training: pl.DataFrame | None,
    config: OfflineEvalConfig,
    judge_validation: pl.DataFrame | None = None,
) -> OfflineEvalResult:
    """Sample both policies (`policies`: new / parent -> model path) on the pool's eval slices and the
    steerability suite, judge the pairs with `judges` (pointwise, pairwise reward models), and gate;
    `judge_validation` (the judges' `reward_model_metrics` rows) says which judges may judge."""
    if pool.is_empty():
        raise ValueError("no pool prompts: materialize the consolidation job for the window's days")
    evals, drops = select_eval_prompts(pool, config.eval_prompts, config.seed)
    if evals.is_empty():
        raise ValueError(
            f"no held-out ({' / '.join(SLICES)}) prompts in the pool: widen the window or raise the eval "
            "fraction of the consolidation's sampling"
        )
    steer = steerability_prompts(config)
    test = steerability_prompts(config, TEST) if config.test_cards else steer.head(0)
    ifeval_inputs, ifeval_prompts = None, None
    if config.ifeval_path:
        ifeval_inputs, ifeval_drops = heldout_ifeval_inputs(config)
        ifeval_prompts = eval_prompt_texts(ifeval_inputs)
        drops = pl.concat([drops, ifeval_drops])
    contexts = reply_contexts(evals, steer, test)
    # each part sampled as if alone: a policy's replies to the fixed suites are the same in every evaluation it
    # takes part in (as the new generation, then as the next one's parent), whatever the window's prompts
    segments = [evals.height, steer.height, test.height]
    ifeval_contexts = chat_contexts(ifeval_inputs) if ifeval_inputs is not None else []
    replies, tokens, speed, engines, ifeval_answers = {}, {}, {}, {}, {}
    for role, path in policies.items():  # same seed: paired samples
        replies[role], tokens[role], stats = sample_policy_replies(path, contexts, config, segments)
        speed[role] = stats.get("tokens_per_s")
        engines[role] = {"backend": stats.get("backend"), "weights_digest": stats.get("weights_digest")}
        if ifeval_contexts:
            ifeval_answers[role], ifeval_stats = ifeval_replies(path, ifeval_contexts, config)
            speed[f"{role}_ifeval"] = "read back" if ifeval_stats["read_back"] else ifeval_stats.get("tokens_per_s")
        elif ifeval_inputs is not None:
            ifeval_answers[role] = []
    ev = Evaluation(generation, evals, steer, replies, names, tokens, config.max_new_tokens, test)
    ev.judge(
        *judges, n_resamples=config.bootstrap_resamples, seed=config.seed, min_cluster_users=config.min_slice_users
    )
    if config.measure_fluency:
        ev.score_fluency(config.fluency_config())
    records, ifeval, differences = ev.records(), None, None
    if ifeval_inputs is not None:
        ifeval, ifeval_records, differences, ifeval_dropped = score_ifeval(
            ifeval_inputs, ifeval_answers, names, config.bootstrap_resamples, config.seed
        )
        records = pl.concat([records, ifeval_records])
        drops = pl.concat([drops, ifeval_dropped])
    gates = ev.gates(training, config.gate_config(), judge_validation, differences, ifeval_prompts)
    samples = ev.samples(config.sample_prompts)
    return OfflineEvalResult(
        ev, gates, records, pl.concat([drops, ev.drops()]), ifeval, speed, samples, engines, differences
    )


def _read_parquet(path: str) -> pl.DataFrame:
    p = Path(path)
    return pl.read_parquet(p / "**" / "*.parquet" if p.is_dir() else p, hive_partitioning=p.is_dir())


def main(argv: Sequence[str] | None = None) -> int:
    from training.policy.stage_config import parse_config
    from training.rewards.reward_model import load_reward_model

    run = parse_config(OfflineEvalRun, argv)
    run.require_inputs()
    pool = _read_parquet(run.prompts)
    training = _read_parquet(run.training_prompts) if run.training_prompts else None
    judges = (load_reward_model(run.pointwise), load_reward_model(run.pairwise))
    names = {"new": Path(run.new_policy).name, "parent": Path(run.parent_policy).name}
    result = evaluate(
        names["new"],
        {"new": run.new_policy, "parent": run.parent_policy},
        names,
        pool,
        judges,
        training,
        OfflineEvalConfig(**{k: v for k, v in asdict(run).items() if k in OfflineEvalConfig.__dataclass_fields__}),
    )
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in {**result.tables(), "drops": result.drops}.items():
        table.write_parquet(out / f"{name.removeprefix('eval_')}.parquet")
    with pl.Config(tbl_rows=20, tbl_width_chars=120, fmt_str_lengths=60):
        print(result.evaluation.overview()["win_rates"])
        print(result.evaluation.overview()["steerability"])
    decision = release_gates.release_decision(list(result.gates.values()))
    for name, gate in result.gates.items():
        print(f"{gate.severity:5} {name}: {gate.detail}")
    print(f"release: {decision.severity}: {decision.detail}\ntables: {out.resolve()}")
    return 0 if decision.severity != "error" else 2


if __name__ == "__main__":
    sys.exit(main())
