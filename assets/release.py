"""Release assets: offline evaluation behind the release gates, the A/B readout, the generation record
and the generations report.

`offline_eval` asks the new generation and its parent for one reply to the same held-out prompts
(both eval slices of the window's pool, and the steerability suite), judges the pairs with this
generation's reward models, and runs the style monitors. Its release gates are blocking checks:
one that fails at ERROR stops the run before the A/B readout and the record, so a generation that
overfits its judges, diverges between slices, regresses on steerability, drifts in style or was
trained on its eval prompts is never recorded (and the next run re-does it). A gate that only
warns fails its check at WARN severity, which shows in the UI and blocks nothing.

`ab_readout` reads the online A/B test of the generation (treatment) against its parent (control);
by default the logs are simulated with a planted lift and every output says so.
`generation_record` writes the generation's row of the `generations` table, which is what makes
the next `generation_plan` start the next generation.
"""

import hashlib
import json
import math
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from assets.curation import CurationSettings
from assets.generation import (
    GROUP_RELEASE,
    GenerationPlan,
    GenerationSettings,
    current_plan,
    dataset_dir,
    models_dir,
    policy_dir,
    read_window,
    recorded_generations,
    reward_model_dir,
    write_generation_table,
)
from assets.herding import parent_policy
from assets.metadata import counts_table, md_table
from assets.pre_herding import load_scorer
from assets.resources import FlywheelSettings
from evaluation import ab_test, release_gates, steerability, style_monitor, winrate
from evaluation.ab_simulator import AbSimConfig, simulate_ab_logs
from evaluation.generation_report import GENERATIONS, GenerationReportConfig, write_generation_report
from pipeline.lake import Lake, Partition
from training.policy.candidates import CandidateConfig, sample_replies, valid_prompts
from training.policy.models import PolicyConfig, chat_messages

SLICES = ("eval_internal", "eval_user")
STAGE = "offline_eval"
GATE_CHECKS = {
    "win_rate_ceiling": "Win rate against the parent at most the ceiling on every slice and judge (warns above "
    "the warning level): a larger win is read as reward hacking, not progress.",
    "slice_divergence": "|eval_user - eval_internal| win rate within the limit for every judge.",
    "steerability_regression": "The instruction-following rate on the steerability suite does not drop more than "
    "the tolerance (a rising violation rate of one instruction type warns).",
    "artifact_drift": "Length, list, emoji, stock-phrase and refusal rates of the eval replies stay in their bands "
    "around the parent's.",
    "train_eval_disjoint": "No eval prompt is among this generation's training prompts (SFT, preference and RL rows, "
    "candidate prompts), by id or by normalised text.",
}
VERDICTS = ("ship", "no-ship", "inconclusive", "invalid")


class ReleaseSettings(dg.ConfigurableResource):
    """Offline evaluation and release gates; gate defaults are those of evaluation.release_gates."""

    temperature: float = Field(default=0.7, description="sampling temperature of eval replies (both policies)")
    seed: int = Field(default=0, description="seed of eval sampling and bootstraps; both policies share it")
    steerability_samples: int = Field(
        default=4, description="replies per steerability prompt and policy (more = a less noisy rate)"
    )
    steerability_suite: str | None = Field(default=None, description="suite JSON; None uses the shipped suite")
    bootstrap_resamples: int = Field(default=2000, description="bootstrap resamples of each win-rate interval")
    cpu_threads: int | None = Field(
        default=None,
        description="torch CPU threads while sampling; None: one for the tiny built-in policy (fastest, "
        "and no thread spinning on a busy machine), torch's default for a configured `policy_model`",
    )
    ifeval_path: str | None = Field(
        default=None,
        description="IFEval input JSONL to score both policies on; None skips it (a tiny model "
        "cannot follow IFEval's instructions)",
    )
    ifeval_max_prompts: int = Field(default=100, description="IFEval prompts scored (the first ones)")
    win_rate_error: float = Field(default=0.65, description="gate: a slice win rate above this blocks the release")
    win_rate_warn: float = Field(default=0.60, description="gate: a slice win rate above this warns")
    slice_divergence_max: float = Field(default=0.10, description="gate: largest |user - internal| win-rate gap")
    steerability_tolerance: float = Field(default=0.02, description="gate: largest following-rate drop")
    max_train_eval_overlap: int = Field(default=0, description="gate: eval prompts allowed in the training prompts")

    def gate_config(self) -> release_gates.GateConfig:
        return release_gates.GateConfig(
            win_rate_error=self.win_rate_error,
            win_rate_warn=self.win_rate_warn,
            slices=SLICES,
            slice_divergence_max=self.slice_divergence_max,
            steerability_tolerance=self.steerability_tolerance,
            max_train_eval_overlap=self.max_train_eval_overlap,
        )

    def sampling(self, generation: GenerationSettings) -> CandidateConfig:
        if self.steerability_samples < 1:
            raise ValueError(f"steerability_samples={self.steerability_samples} must be >= 1 (default 4)")
        threads = self.cpu_threads if self.cpu_threads is not None else (1 if generation.policy_model is None else None)
        return CandidateConfig(
            num_samples=1,
            max_new_tokens=generation.max_new_tokens,
            temperature=self.temperature,
            seed=self.seed,
            cpu_threads=threads,
        )


class AbSettings(dg.ConfigurableResource):
    """Where the A/B logs come from and how they are read."""

    source: str = Field(
        default_factory=lambda: os.environ.get("FLYWHEEL_AB_SOURCE") or "simulate",
        description="simulate: write simulated logs with a planted lift (labelled as such); "
        "lake: read the ab_exposures / ab_events tables you loaded (env FLYWHEEL_AB_SOURCE)",
    )
    window_days: int = Field(default=7, description="days of the analysis window")
    start: str | None = Field(default=None, description="first day of the window (ISO); None: first exposure day")
    control: str = Field(default="control", description="control arm name (the parent generation)")
    treatment: str = Field(default="treatment", description="treatment arm name (the new generation)")
    planned_treatment_share: float = Field(default=0.5, description="planned treatment share, for the SRM test")
    alpha: float = Field(default=0.05, description="1 - confidence level of the lift intervals")
    srm_alpha: float = Field(default=0.001, description="SRM is flagged below this chi-square p-value")
    n_bootstrap: int = Field(default=2000, description="bootstrap resamples of the lifts (0 skips)")
    simulated_users: int = Field(default=20_000, description="simulate: exposed users")
    planted_lift_breadth: float = Field(default=0.05, description="simulate: true relative lift of breadth")
    planted_lift_depth: float = Field(default=0.03, description="simulate: true relative lift of depth")

    def ab_config(self, start: str | None = None) -> ab_test.AbConfig:
        if self.source not in ("simulate", "lake"):
            raise ValueError(f"ab source={self.source!r}: set `source` (or FLYWHEEL_AB_SOURCE) to simulate or lake")
        return ab_test.AbConfig(
            start=start or self.start,
            window_days=self.window_days,
            control=self.control,
            treatment=self.treatment,
            planned_treatment_share=self.planned_treatment_share,
            alpha=self.alpha,
            srm_alpha=self.srm_alpha,
            n_bootstrap=self.n_bootstrap,
            seed=0,
        )

    def sim_config(self, plan: GenerationPlan) -> AbSimConfig:
        start = self.start or (date.fromisoformat(plan.days[-1]) + timedelta(days=1)).isoformat()
        return AbSimConfig(
            n_users=self.simulated_users,
            treatment_share=self.planned_treatment_share,
            lift_breadth=self.planted_lift_breadth,
            lift_depth=self.planted_lift_depth,
            window_days=self.window_days,
            exposure_days=min(3, self.window_days),
            start=start,
            control=self.control,
            treatment=self.treatment,
            seed=plan.number,
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _gen_table(lake: Lake, table: str, plan: GenerationPlan) -> pl.DataFrame:
    part = Partition.generation(plan.generation)
    return lake.read(table, part) if lake.exists(table, part) else pl.DataFrame()


def _json(value) -> str:
    """JSON that any reader parses: NaN and infinities (an interval of one prompt) become null."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), sort_keys=True, default=str)


def _write_drops(lake: Lake, plan: GenerationPlan, part: str, drops: pl.DataFrame) -> None:
    lake.write("drops", Partition.generation(plan.generation), drops, part=part, replace=False)


# ---- offline evaluation -----------------------------------------------------------------------------


def _rank(ids: list[str], seed: int) -> list[str]:
    return [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids]


def select_eval_prompts(pool: pl.DataFrame, per_slice: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Up to `per_slice` held-out prompts per slice, chosen by a seeded hash of the prompt id (the same
    prompts on every run); prompts that do not end in a user turn are returned as drops."""
    held = pool.filter(pl.col("split").is_in(SLICES))
    usable, drops = valid_prompts(held, stage=STAGE)
    chosen = (
        usable.with_columns(pl.Series("_rank", _rank(usable["prompt_id"].to_list(), seed), dtype=pl.Utf8))
        .sort("split", "_rank")
        .group_by("split", maintain_order=True)
        .head(per_slice)
        .drop("_rank")
    )
    return chosen.sort("split", "prompt_id"), drops


def _replies(policy: str, contexts: list[list[dict]], cfg: CandidateConfig) -> tuple[list[str], dict]:
    texts, _, stats = sample_replies(
        PolicyConfig(model_name_or_path=policy, device=cfg.device, cpu_threads=cfg.cpu_threads), contexts, cfg
    )
    return [t[0] for t in texts], stats


def _pointwise_judge(model):
    return lambda ctx, resp: model.score([json.loads(c) for c in ctx], list(resp))


def _utility_judge(model):
    def judge(ctx, a, b):
        messages = [json.loads(c) for c in ctx]
        return model.score(messages, list(a)), model.score(messages, list(b))

    return judge


def trained_prompts(settings: FlywheelSettings, lake: Lake, plan: GenerationPlan) -> pl.DataFrame:
    """(prompt_id, text) of everything this generation trained on: SFT, preference and RL rows and the
    candidate prompts; texts come from the window's pool and the candidate prompts."""
    ids: set[str] = set()
    found = []
    for name in ("sft", "preference", "rl"):
        rows = dataset_dir(settings, plan.generation, name) / "rows.parquet"
        if rows.is_file():
            found.append(name)
            ids |= set(pl.read_parquet(rows, columns=["prompt_id"])["prompt_id"].drop_nulls().to_list())
    if "sft" not in found:
        raise ValueError(
            f"no SFT rows at {dataset_dir(settings, plan.generation, 'sft')}: materialize sft_dataset "
            "first (the train/eval gate cannot be checked without it)"
        )
    cand = _gen_table(lake, "candidate_prompts", plan)
    texts = [read_window(lake, "prompts", plan)]
    if cand.height:
        ids |= set(cand["prompt_id"].to_list())
        texts.append(cand)
    known = pl.concat([t.select("prompt_id", "text") for t in texts if t.height], how="vertical_relaxed").unique(
        "prompt_id"
    )
    frame = pl.DataFrame({"prompt_id": sorted(ids)}, schema={"prompt_id": pl.Utf8})
    return frame.join(known, on="prompt_id", how="left")


def _style_rows(sides: dict[str, pl.DataFrame]) -> pl.DataFrame:
    rows = []
    for role, frame in sides.items():
        mon = style_monitor.monitor(frame)
        fr, _ = style_monitor.false_refusal_rate(frame, prompt_col="prompt")
        rows.append(
            pl.concat([mon, fr.select("false_refusal_rate", "n_benign")], how="horizontal").with_columns(
                pl.lit(role).alias("role"), pl.lit(frame["policy"][0]).alias("policy")
            )
        )
    return pl.concat(rows)


def _gap_intervals(outcomes: pl.DataFrame) -> dict[str, list[float] | None]:
    """Normal-approximation 95% interval of win rate(eval_user) - win rate(eval_internal) per judge, shown
    next to the divergence gate so a reader sees how much of a gap the slice sizes alone can produce."""
    out = {}
    for (judge,), o in outcomes.group_by("judge", maintain_order=True):
        stats = {s: o.filter(pl.col("slice") == s)["outcome"] for s in SLICES}
        if min(len(v) for v in stats.values()) < 2:
            out[judge] = None
            continue
        gap = stats[SLICES[1]].mean() - stats[SLICES[0]].mean()
        se = sum(float(v.var()) / len(v) for v in stats.values()) ** 0.5
        out[judge] = [round(gap - 1.96 * se, 4), round(gap + 1.96 * se, 4)]
    return out


class Evaluation:
    """Everything offline_eval measured, before it is written and gated."""

    def __init__(
        self,
        plan: GenerationPlan,
        evals: pl.DataFrame,
        steer: pl.DataFrame,
        replies: dict[str, list[str]],
        names: dict[str, str],
    ):
        self.plan, self.evals, self.steer, self.names = plan, evals, steer, names
        n_eval, n_steer = evals.height, steer.height
        ctx = [
            json.dumps(chat_messages(r["system"], r["history"]), ensure_ascii=False)
            for r in evals.select("system", "history").iter_rows(named=True)
        ]
        self.sides = {
            role: evals.select(
                "prompt_id", pl.col("split").alias("slice"), pl.col("last_user").alias("prompt")
            ).with_columns(
                pl.Series("context", ctx, dtype=pl.Utf8),
                pl.Series("response", texts[:n_eval], dtype=pl.Utf8),
                pl.lit(names[role]).alias("policy"),
            )
            for role, texts in replies.items()
        }
        self.steer_replies = {role: texts[n_eval : n_eval + n_steer] for role, texts in replies.items()}
        self.extra_replies = {role: texts[n_eval + n_steer :] for role, texts in replies.items()}

    def judge(self, pointwise, pairwise, release: "ReleaseSettings") -> None:
        self.wr = winrate.win_rate(
            self.sides["new"],
            self.sides["parent"],
            pointwise={"pointwise": _pointwise_judge(pointwise)},
            pairwise={"pairwise": _utility_judge(pairwise)},
            config=winrate.WinRateConfig(
                slices=SLICES, pairwise_output="utilities", n_resamples=release.bootstrap_resamples, seed=release.seed
            ),
        )
        self.scored = {
            role: steerability.score_responses(self.steer.with_columns(pl.Series("response", texts, dtype=pl.Utf8)))
            for role, texts in self.steer_replies.items()
        }
        self.style = _style_rows(self.sides)
        self.steer_summary = pl.concat(
            [
                s.summary.with_columns(pl.lit(r).alias("role"), pl.lit(self.names[r]).alias("policy"))
                for r, s in self.scored.items()
            ]
        )

    def gates(self, training: pl.DataFrame, config: release_gates.GateConfig) -> dict[str, release_gates.GateResult]:
        style = {r["role"]: r for r in self.style.iter_rows(named=True)}
        gates = {
            "win_rate_ceiling": release_gates.win_rate_ceiling(self.wr.summary, config),
            "slice_divergence": release_gates.slice_divergence(self.wr.summary, config),
            "steerability_regression": release_gates.steerability_regression(
                self.scored["new"].summary, self.scored["parent"].summary, config
            ),
            "artifact_drift": release_gates.artifact_drift(style["new"], style["parent"], config),
            "train_eval_disjoint": release_gates.train_eval_disjoint(
                training, self.evals.select("prompt_id", "text"), config
            ),
        }
        gates["slice_divergence"].metadata.update(
            n_per_slice={s: int((self.evals["split"] == s).sum()) for s in SLICES},
            gap_ci95=_gap_intervals(self.wr.outcomes),
        )
        return gates

    def records(self) -> pl.DataFrame:
        """eval_records rows per prompt and policy (the win-rate outcomes belong to the new generation)."""
        gen = self.plan.generation
        pw = self.wr.outcomes.filter(pl.col("judge") == "pointwise")
        parts = [winrate.eval_records(self.wr.outcomes, gen).with_columns(pl.lit(gen).alias("policy"))]
        for role, side in self.sides.items():
            score = dict(zip(pw["prompt_id"], pw["score_new" if role == "new" else "score_prev"]))
            feats = style_monitor.response_features(side["response"].to_list())
            cols = {
                "rm_pointwise": [score.get(p) for p in side["prompt_id"]],
                "style/n_chars": feats["n_chars"],
                "style/n_emoji": feats["n_emoji"],
                "style/has_list": feats["has_list"],
                "style/is_refusal": feats["is_refusal"],
            }
            parts += [
                side.select("slice", "prompt_id", "policy").with_columns(
                    pl.lit(metric).alias("metric"), pl.Series("value", values).cast(pl.Float64)
                )
                for metric, values in cols.items()
            ]
            steer = steerability.eval_records(self.scored[role].rows, gen).with_columns(
                pl.col("prompt_id").str.replace(r"#\d+$", "")
            )  # samples of one prompt share its id
            parts.append(
                steer.group_by("slice", "prompt_id", "metric", maintain_order=True)
                .agg(pl.col("value").mean())
                .with_columns(pl.lit(self.names[role]).alias("policy"))
            )
        return pl.concat(
            [p.select("slice", "prompt_id", "metric", pl.col("value").cast(pl.Float64), "policy") for p in parts]
        )

    def responses(self) -> pl.DataFrame:
        steer = [
            self.steer.select(
                "prompt_id",
                pl.lit("steerability").alias("slice"),
                pl.lit(self.names[r]).alias("policy"),
                pl.lit(None, pl.Utf8).alias("context"),
                pl.Series("response", texts, dtype=pl.Utf8),
            )
            for r, texts in self.steer_replies.items()
        ]
        return pl.concat(
            [s.select("prompt_id", "slice", "policy", "context", "response") for s in self.sides.values()] + steer
        )

    def metadata(self, gates: dict[str, release_gates.GateResult]) -> dict:
        decision = release_gates.release_decision(list(gates.values()))
        summary = self.wr.summary
        overall = {r["role"]: r for r in self.steer_summary.filter(pl.col("level") == "overall").iter_rows(named=True)}
        rates = ("following_rate", "violation_rate")
        by_instruction = (
            self.steer_summary.filter(pl.col("level") == "instruction")
            .pivot("role", index="key", values="violation_rate")
            .rename({"key": "instruction"})
        )
        style = {r["role"]: r for r in self.style.iter_rows(named=True)}
        meta = {
            "generation": self.plan.generation,
            "parent": self.plan.parent,
            "release": dg.MetadataValue.md(f"**{decision.severity}**: {decision.detail}"),
            "eval_prompts": dg.MetadataValue.json({s: int((self.evals["split"] == s).sum()) for s in SLICES}),
            "win_rates": md_table(summary.with_columns(pl.col("win_rate", "ci_low", "ci_high").round(3))),
            "steerability": md_table(
                _compare(overall["new"], overall["parent"], rates).with_columns(
                    pl.col("parent", "new", "delta").round(3)
                )
            ),
            "violation_rate_by_instruction": md_table(by_instruction.with_columns(pl.col(pl.Float64).round(3)), 20),
            "style": md_table(
                _compare(
                    style["new"], style["parent"], [*style_monitor.MONITOR_METRICS, "false_refusal_rate"]
                ).with_columns(pl.col("parent", "new", "delta").round(4)),
                20,
            ),
            "examples": md_table(
                self.sides["new"]
                .select("slice", "prompt", pl.col("response").alias("new"))
                .with_columns(self.sides["parent"]["response"].alias("parent")),
                max_rows=6,
            ),
            "following_rate/new": float(overall["new"]["following_rate"]),
        }
        for r in summary.filter(pl.col("win_rate").is_not_null()).iter_rows(named=True):
            meta[f"win_rate/{r['slice']}/{r['judge']}"] = float(r["win_rate"])
        return meta


def _gate_check(name: str, gate: release_gates.GateResult) -> dg.AssetCheckResult:
    meta = {
        k: dg.MetadataValue.json(v) if isinstance(v, (dict, list, tuple)) else v
        for k, v in gate.metadata.items()
        if v is not None
    }
    return dg.AssetCheckResult(
        asset_key="offline_eval",
        check_name=name,
        passed=gate.severity == "ok",
        severity=dg.AssetCheckSeverity.WARN if gate.severity == "warn" else dg.AssetCheckSeverity.ERROR,
        description=f"{gate.severity}: {gate.detail}"
        + (f" (prompts per slice: {gate.metadata['n_per_slice']})" if "n_per_slice" in gate.metadata else ""),
        metadata=meta,
    )


def _compare(new: dict, parent: dict, keys) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "metric": k,
                "parent": parent.get(k),
                "new": new.get(k),
                "delta": (new[k] - parent[k]) if new.get(k) is not None and parent.get(k) is not None else None,
            }
            for k in keys
        ],
        schema={"metric": pl.Utf8, "parent": pl.Float64, "new": pl.Float64, "delta": pl.Float64},
    )


def _steerability_prompts(release: "ReleaseSettings") -> pl.DataFrame:
    """The suite's prompts, each repeated `steerability_samples` times (ids suffixed #k)."""
    base = steerability.build_prompts(steerability.load_suite(release.steerability_suite))
    return pl.concat(
        [
            base.with_columns(pl.format("{}#{}", "prompt_id", pl.lit(k)).alias("prompt_id"))
            for k in range(release.steerability_samples)
        ]
    )


@dg.asset(
    deps=["grpo_checkpoint", "reward_model_pointwise", "reward_model_pairwise"],
    group_name=GROUP_RELEASE,
    kinds={"pytorch", "parquet"},
    description="Offline evaluation of the new generation against its parent on held-out prompts: win rates per "
    "slice judged by this generation's pointwise and pairwise reward models (bootstrap CIs), steerability, style "
    "monitors and false refusals; the release gates are its blocking checks.",
    check_specs=[
        dg.AssetCheckSpec(name, asset="offline_eval", blocking=True, description=desc)
        for name, desc in GATE_CHECKS.items()
    ],
)
def offline_eval(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    generation: GenerationSettings,
    release: ReleaseSettings,
    curation: CurationSettings,
):
    plan, lake = current_plan(settings), settings.lake()
    cfg = release.sampling(generation)
    pool = read_window(lake, "prompts", plan)
    if pool.is_empty():
        raise ValueError(f"no pool prompts for the days {plan.days}: materialize the consolidation job for them")
    evals, drops = select_eval_prompts(pool, generation.eval_prompts, release.seed)
    if evals.is_empty():
        raise ValueError(
            f"no held-out ({' / '.join(SLICES)}) prompts in the pool of {plan.days}: widen "
            "`window_days` or raise the eval fraction of the consolidation's sampling"
        )
    steer = _steerability_prompts(release)
    contexts = [
        chat_messages(r["system"], r["history"]) for r in evals.select("system", "history").iter_rows(named=True)
    ]
    contexts += [chat_messages(s, list(m)) for s, m in zip(steer["system"], steer["messages"].to_list())]
    ifeval_inputs = None
    if release.ifeval_path:
        from evaluation.ifeval import read_inputs

        ifeval_inputs, ifeval_drops = read_inputs(release.ifeval_path)
        ifeval_inputs = ifeval_inputs.head(release.ifeval_max_prompts)
        drops = pl.concat([drops, ifeval_drops])
        contexts += [[{"role": "user", "content": p}] for p in ifeval_inputs["prompt"]]

    policies = {"new": str(policy_dir(settings, plan.generation)), "parent": parent_policy(settings, generation, plan)}
    replies, speed = {}, {}
    for role, path in policies.items():  # one model load per policy, same seed: paired samples
        replies[role], stats = _replies(path, contexts, cfg)
        speed[role] = stats.get("tokens_per_s")
    ev = Evaluation(plan, evals, steer, replies, {"new": plan.generation, "parent": plan.parent})
    # the judges embed with the embedder their features were trained on (the curation's)
    ev.judge(
        load_scorer(settings, plan.generation, "pointwise", curation),
        load_scorer(settings, plan.generation, "pairwise", curation),
        release,
    )
    gates = ev.gates(trained_prompts(settings, lake, plan), release.gate_config())

    records = ev.records()
    meta = ev.metadata(gates)
    if ifeval_inputs is not None:
        summary, ifeval_records = _score_ifeval(ifeval_inputs, ev.extra_replies, ev.names)
        records = pl.concat([records, ifeval_records])
        write_generation_table(lake, "eval_ifeval", plan, summary)
        meta["ifeval"] = md_table(summary)
    write_generation_table(lake, "eval_records", plan, records)
    write_generation_table(lake, "eval_responses", plan, ev.responses())
    write_generation_table(lake, "eval_win_rates", plan, ev.wr.summary)
    write_generation_table(lake, "eval_steerability", plan, ev.steer_summary)
    write_generation_table(lake, "eval_style", plan, ev.style)
    write_generation_table(
        lake,
        "release_gates",
        plan,
        pl.DataFrame(
            [
                {
                    "gate": name,
                    "passed": g.passed,
                    "severity": g.severity,
                    "detail": g.detail,
                    "metadata": _json(g.metadata),
                }
                for name, g in gates.items()
            ]
        ),
    )
    drops = pl.concat([drops, ev.wr.drops, *(s.drops for s in ev.scored.values())])
    _write_drops(lake, plan, STAGE, drops)
    meta["drops_by_reason"] = counts_table(
        dict(drops.group_by("reason_code").len().iter_rows()) if drops.height else {}
    )
    meta["tokens_per_s"] = dg.MetadataValue.json(speed)
    yield dg.MaterializeResult(metadata=meta)
    for name, gate in gates.items():
        yield _gate_check(name, gate)


def _score_ifeval(inputs: pl.DataFrame, replies: dict[str, list[str]], names: dict[str, str]):
    from evaluation.ifeval import score_ifeval

    summaries, records = [], []
    for role, texts in replies.items():
        res = score_ifeval(inputs, pl.DataFrame({"prompt": inputs["prompt"], "response": texts}))
        summaries.append(res.summary.with_columns(pl.lit(role).alias("role"), pl.lit(names[role]).alias("policy")))
        records.append(
            res.rows.select(
                pl.lit("ifeval").alias("slice"),
                pl.col("key").cast(pl.Utf8).alias("prompt_id"),
                pl.lit("ifeval/prompt_strict").alias("metric"),
                pl.col("prompt_strict").cast(pl.Float64).alias("value"),
                pl.lit(names[role]).alias("policy"),
            )
        )
    return pl.concat(summaries), pl.concat(records)


# ---- A/B readout --------------------------------------------------------------------------------------


def _significant(row: dict, sign: int) -> bool:
    """Both the delta-method and (when computed) the bootstrap interval exclude 0 on the `sign` side."""

    def beyond(lo, hi) -> bool:
        return lo is not None and hi is not None and (lo > 0 if sign > 0 else hi < 0)

    if not beyond(row.get("delta_ci_low"), row.get("delta_ci_high")):
        return False
    boot = (row.get("boot_ci_low"), row.get("boot_ci_high"))
    return boot == (None, None) or beyond(*boot)


def ab_decision(lifts: pl.DataFrame, srm: pl.DataFrame, primary: str = "breadth") -> tuple[str, str]:
    """(verdict, reason). invalid: sample-ratio mismatch, no lift can be trusted; no-ship: a metric is
    significantly worse in treatment; ship: the primary metric (breadth) is significantly better and
    nothing is significantly worse; inconclusive: otherwise (intervals include 0, or too few engaged
    users for an estimate). Significant = the delta-method and bootstrap 95% intervals both exclude 0."""
    if srm.height and bool(srm["srm"][0]):
        return "invalid", f"sample-ratio mismatch (p = {srm['p_value'][0]:.2g}): assignment or logging is broken"
    rows = {r["metric"]: r for r in lifts.iter_rows(named=True)}
    worse = [m for m, r in rows.items() if _significant(r, -1)]
    if worse:
        return "no-ship", f"significantly worse in treatment: {', '.join(worse)}"
    if primary in rows and _significant(rows[primary], +1):
        return "ship", f"{primary} significantly better, no metric significantly worse"
    return "inconclusive", f"{primary} lift not significant (or not estimable); nothing significantly worse"


def _lake_logs(lake: Lake, plan: GenerationPlan) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The loaded logs: this generation's partition when there is one, else every partition; rows the
    simulator wrote (`simulated`) never count as real traffic."""
    out = []
    for table in ("ab_exposures", "ab_events"):
        if not lake.exists(table):
            raise ValueError(
                f"ab source is `lake` but the lake has no `{table}` table: load your logs into it "
                "(see training/ab_test.py for the columns) or set `source` to simulate"
            )
        frame = _gen_table(lake, table, plan)
        frame = frame if frame.height else lake.scan(table).collect()
        if "simulated" in frame.columns:
            frame = frame.filter(~pl.col("simulated").fill_null(False))
        out.append(frame)
    return out[0], out[1]


@dg.asset(
    deps=["offline_eval"],
    group_name=GROUP_RELEASE,
    kinds={"duckdb", "parquet"},
    description="Online A/B readout of the new generation (treatment) against its parent (control) over a 7-day "
    "window: breadth and depth per arm, lifts with delta-method and bootstrap 95% CIs, p-values, the SRM test and "
    "a verdict. Default source: SIMULATED logs with a planted lift.",
    check_specs=[
        dg.AssetCheckSpec(
            "sample_ratio",
            asset="ab_readout",
            blocking=True,
            description="Exposed users per arm match the planned split (chi-square SRM test).",
        )
    ],
)
def ab_readout(context: dg.AssetExecutionContext, settings: FlywheelSettings, ab: AbSettings):
    plan, lake = current_plan(settings), settings.lake()
    config = ab.ab_config()
    simulated = ab.source == "simulate"
    if simulated:
        sim = ab.sim_config(plan)
        exposures, events = simulate_ab_logs(sim)
        write_generation_table(lake, "ab_exposures", plan, exposures.with_columns(pl.lit(True).alias("simulated")))
        write_generation_table(lake, "ab_events", plan, events.with_columns(pl.lit(True).alias("simulated")))
        config = ab.ab_config(start=sim.start)
    else:
        exposures, events = _lake_logs(lake, plan)
    readout = ab_test.ab_readout(exposures, events, config)
    verdict, reason = ab_decision(readout.lifts, readout.srm)
    label = pl.lit(ab.source).alias("source"), pl.lit(simulated).alias("simulated")
    write_generation_table(
        lake,
        "ab_lifts",
        plan,
        readout.lifts.with_columns(*label, pl.lit(verdict).alias("verdict"), pl.lit(reason).alias("reason")),
    )
    write_generation_table(
        lake, "ab_arms", plan, readout.arms.with_columns(*label, pl.Series("model", [plan.parent, plan.generation]))
    )
    write_generation_table(lake, "ab_srm", plan, readout.srm.with_columns(*label))
    _write_drops(lake, plan, "ab_readout", readout.drops)

    source = (
        f"SIMULATED logs (planted lift: breadth {ab.planted_lift_breadth:+.1%}, depth "
        f"{ab.planted_lift_depth:+.1%}, {ab.simulated_users} users), not real traffic"
        if simulated
        else "ab_exposures / ab_events tables in the lake"
    )
    srm = readout.srm.row(0, named=True)
    lifts = readout.lifts.select(
        "metric",
        *(
            pl.col(c).round(4)
            for c in (
                "control",
                "treatment",
                "lift",
                "delta_ci_low",
                "delta_ci_high",
                "delta_p_value",
                "boot_ci_low",
                "boot_ci_high",
                "boot_p_value",
            )
        ),
        "significant",
    )
    meta = {
        "generation": plan.generation,
        "source": source,
        "simulated": simulated,
        "verdict": verdict,
        "verdict_reason": reason,
        "arms": md_table(
            readout.arms.with_columns(
                pl.Series("model", [plan.parent, plan.generation]), pl.col("breadth", "depth").round(4)
            )
        ),
        "lifts": md_table(lifts),
        "srm_p_value": float(srm["p_value"]) if srm["p_value"] is not None else float("nan"),
        "observed_treatment_share": float(srm["observed_treatment_share"] or 0.0),
        "counters": dg.MetadataValue.json(readout.counters),
    }
    for r in readout.lifts.filter(pl.col("lift").is_not_null()).iter_rows(named=True):
        meta[f"lift/{r['metric']}"] = float(r["lift"])
    yield dg.MaterializeResult(metadata=meta)
    yield dg.AssetCheckResult(
        asset_key="ab_readout",
        check_name="sample_ratio",
        passed=not srm["srm"],
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"chi-square p = {srm['p_value']:.3g} (flagged below {config.srm_alpha}): observed treatment "
            f"share {srm['observed_treatment_share']} vs planned {srm['planned_treatment_share']}"
        ),
        metadata={"n_control": int(srm["n_control"]), "n_treatment": int(srm["n_treatment"])},
    )


# ---- the record and the report ------------------------------------------------------------------------


def _digest(paths: list[Path], root: Path | None = None) -> str | None:
    if not paths:
        return None
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(root) if root else p.name).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _dir_digest(directory: Path) -> str | None:
    if not directory.is_dir():
        return None
    return _digest([p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")], directory)


def _manifest(directory: Path) -> dict:
    path = directory / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def lineage_inputs(settings: FlywheelSettings, generation: GenerationSettings, plan: GenerationPlan) -> dict:
    """Content hashes of what the generation was built from."""
    lake = settings.lake()
    manifests = {n: _manifest(dataset_dir(settings, plan.generation, n)) for n in ("sft", "preference", "rl")}
    return {
        "window": {"days": plan.days, "prompts_sha256": {d: _digest(lake.files("prompts", d)) for d in plan.days}},
        "datasets": {n: m.get("content_hash") for n, m in manifests.items()},
        "dataset_rows": {n: m.get("rows") for n, m in manifests.items()},
        "candidates_sha256": _digest(lake.files("candidates", Partition.generation(plan.generation))),
        "reward_models": {
            k: {
                "path": str(reward_model_dir(settings, plan.generation, k)),
                "sha256": _dir_digest(reward_model_dir(settings, plan.generation, k)),
            }
            for k in ("pointwise", "pairwise")
        },
        "parent_policy": parent_policy(settings, generation, plan),
        "annotations_path": generation.annotations_path,
    }


def _metric_values(frame: pl.DataFrame, keys: tuple[str, ...]) -> dict:
    return {r["role"]: {k: r.get(k) for k in keys} for r in frame.iter_rows(named=True)} if frame.height else {}


def collect_metrics(lake: Lake, plan: GenerationPlan) -> dict:
    """The `metrics` document of a generation (evaluation.generation_report), from the lake tables of its
    evaluation, A/B readout and reward models; whatever is missing is left out."""
    wr = _gen_table(lake, "eval_win_rates", plan)
    steer = _gen_table(lake, "eval_steerability", plan)
    style = _gen_table(lake, "eval_style", plan)
    rm = _gen_table(lake, "reward_model_metrics", plan)
    lifts, arms, srm = (_gen_table(lake, t, plan) for t in ("ab_lifts", "ab_arms", "ab_srm"))
    metrics: dict = {"version": 1}
    if wr.height:
        metrics["win_rates"] = wr.select("slice", "judge", "n", "win_rate", "ci_low", "ci_high").to_dicts()
    if steer.height:
        metrics["steerability"] = _metric_values(
            steer.filter(pl.col("level") == "overall"), ("following_rate", "violation_rate", "n")
        )
    if style.height:
        metrics["style"] = _metric_values(style, (*style_monitor.MONITOR_METRICS, "false_refusal_rate", "n"))
    if rm.height and {"model", "section", "metric", "value"} <= set(rm.columns):
        rows = rm.filter(pl.col("section").is_in(["pointwise", "pairwise"]) & pl.col("value").is_not_null())
        metrics["reward_models"] = {
            m: dict(zip(g["metric"], g["value"])) for (m,), g in rows.group_by("model", maintain_order=True)
        }
    if lifts.height:
        metrics["ab"] = {
            "source": lifts["source"][0],
            "simulated": bool(lifts["simulated"][0]),
            "verdict": lifts["verdict"][0],
            "reason": lifts["reason"][0],
            "lifts": {
                r["metric"]: {
                    k: v
                    for k, v in r.items()
                    if k not in ("metric", "generation", "source", "simulated", "verdict", "reason")
                }
                for r in lifts.iter_rows(named=True)
            },
            "srm": srm.drop("generation", strict=False).row(0, named=True) if srm.height else {},
            "arms": arms.drop("generation", strict=False).to_dicts(),
        }
    ifeval = _gen_table(lake, "eval_ifeval", plan)
    if ifeval.height:
        metrics["ifeval"] = {
            r["role"]: {k: v for k, v in r.items() if k.endswith("_acc")} for r in ifeval.iter_rows(named=True)
        }
    return metrics


@dg.asset(
    deps=[
        "offline_eval",
        "ab_readout",
        "grpo_checkpoint",
        "sft_dataset",
        "preference_dataset",
        "rl_prompts",
        "reward_model_report",
    ],
    group_name=GROUP_RELEASE,
    kinds={"parquet", "duckdb"},
    description="The generation's row in the `generations` table: parent, window, input content hashes, "
    "checkpoints, metrics, gate outcome and A/B verdict. Recording it ends the generation: the next "
    "`generation_plan` starts the next one.",
)
def generation_record(context: dg.AssetExecutionContext, settings: FlywheelSettings, generation: GenerationSettings):
    plan, lake = current_plan(settings), settings.lake()
    gates = _gen_table(lake, "release_gates", plan)
    if gates.is_empty():
        raise ValueError(f"{plan.generation} has no release-gate results: materialize offline_eval first")
    failed = gates.filter(pl.col("severity") == "error")
    if failed.height:
        # a run of this asset alone is not stopped by the blocking checks of an earlier run
        raise ValueError(
            f"{plan.generation} failed its release gates, so it is not recorded: "
            + "; ".join(f"{g}: {d}" for g, d in failed.select("gate", "detail").iter_rows())
        )
    metrics = collect_metrics(lake, plan)
    ab = metrics.get("ab")
    if ab is None:
        raise ValueError(f"{plan.generation} has no A/B readout: materialize ab_readout first")
    if ab["verdict"] == "invalid":
        raise ValueError(f"{plan.generation}'s A/B readout is invalid ({ab['reason']}): fix the experiment first")
    warned = gates.filter(pl.col("severity") == "warn")
    root = models_dir(settings, plan.generation)
    row = {
        "generation": plan.generation,
        "number": plan.number,
        "parent": plan.parent,
        "created_at": plan.created_at,
        "recorded_at": _now(),
        "window_start": date.fromisoformat(plan.days[0]),
        "window_end": date.fromisoformat(plan.days[-1]),
        "days": plan.days,
        "inputs": _json(lineage_inputs(settings, generation, plan)),
        "checkpoints": _json(
            {
                "policy": str(policy_dir(settings, plan.generation)),
                "sft": str(root / "sft"),
                "dpo": str(root / "dpo"),
                "grpo": str(root / "grpo"),
                "parent": parent_policy(settings, generation, plan),
            }
        ),
        "metrics": _json(metrics),
        "gate": "passed_with_warnings" if warned.height else "passed",
        "gate_detail": _json(gates.select("gate", "severity", "detail").to_dicts()),
        "ab_verdict": ab["verdict"],
        "ab_source": ab["source"],
    }
    path = lake.write("generations", Partition.generation(plan.generation), pl.DataFrame([row], schema=GENERATIONS))
    lake.refresh_catalog()
    return dg.MaterializeResult(
        metadata={
            "generation": plan.generation,
            "number": plan.number,
            "parent": plan.parent,
            "gate": row["gate"],
            "ab_verdict": ab["verdict"] + (" (simulated)" if ab["simulated"] else ""),
            "inputs": dg.MetadataValue.json(json.loads(row["inputs"])),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    deps=["generation_record"],
    group_name=GROUP_RELEASE,
    kinds={"html"},
    description="One offline HTML page over every recorded generation: win rates per slice, steerability, style "
    "monitors and A/B lifts with CIs, and each generation's lineage.",
)
def generation_report(context: dg.AssetExecutionContext, settings: FlywheelSettings, release: ReleaseSettings):
    files = write_generation_report(
        recorded_generations(settings.lake()),
        settings.reports_dir / "generations",
        GenerationReportConfig(win_rate_warn=release.win_rate_warn, win_rate_ceiling=release.win_rate_error),
    )
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(files.index.resolve())),
            "summary": dg.MetadataValue.md(files.markdown),
            "generations": files.generations,
            "charts": dg.MetadataValue.json(files.plots),
        }
    )


RELEASE_ASSETS = [offline_eval, ab_readout, generation_record, generation_report]
RELEASE_RESOURCES = {"release": ReleaseSettings(), "ab": AbSettings()}
