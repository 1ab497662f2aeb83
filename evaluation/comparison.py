"""Two policies' replies to the same prompts, compared: win rates by reward-model judges, steerability,
style monitors, fluency under a reference model, IFEval, and the release gates over all of it.

`Evaluation` takes the replies (however they were sampled) and scores them; it imports nothing from
training, so the same numbers come out whoever produced the replies. `evaluation.offline_eval` samples the
replies and runs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import polars as pl

from engine.style import ended_flags
from evaluation import (
    evidence,
    fluency,
    gate_config,
    release_gates,
    side_by_side,
    steerability,
    style_monitor,
    winrate,
    winrate_config,
)
from evaluation.record import json_document
from pipeline.prompts import chat_messages

SLICES = ("eval_internal", "eval_user")
JUDGES = ("pointwise", "pairwise")
# the slice and metric prefix of the test cards' records: only the report and the benches read them
TEST_STAGE = "steerability_test"


def pointwise_judge(model) -> Callable:
    return lambda ctx, resp: model.score([json.loads(c) for c in ctx], list(resp))


def utility_judge(model) -> Callable:
    def judge(ctx, a, b):
        messages = [json.loads(c) for c in ctx]
        return model.score(messages, list(a)), model.score(messages, list(b))

    return judge


def _token_columns(counts: list[int | None], max_new_tokens: int | None) -> list[pl.Series]:
    """`n_tokens` of each reply and whether it `ended` on its own (`engine.sampling.ended_flags`)."""
    return [
        pl.Series("n_tokens", counts, dtype=pl.Int64),
        pl.Series("ended", ended_flags(counts, max_new_tokens), dtype=pl.Boolean),
    ]


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
        if any(len(v) < 2 for v in stats.values()):
            out[judge] = None
            continue
        gap = float(stats["eval_user"].mean()) - float(stats["eval_internal"].mean())
        se = sum(float(v.var()) / len(v) for v in stats.values()) ** 0.5
        out[judge] = [round(gap - 1.96 * se, 4), round(gap + 1.96 * se, 4)]
    return out


def compare(new: dict, parent: dict, keys: Sequence[str]) -> pl.DataFrame:
    """metric, parent, new, delta for each key of two summary rows."""
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


class Evaluation:
    """Everything an offline evaluation measured, before it is written and gated.

    `replies[role]` holds one reply per context of `reply_contexts(evals, steer, test)`, in that order, and
    `tokens[role]` (when the sampler counted them) each reply's token count: a reply of `max_new_tokens` tokens
    ran into the limit (it was cut off) and did not end on its own.
    """

    def __init__(
        self,
        generation: str,
        evals: pl.DataFrame,
        steer: pl.DataFrame,
        replies: dict[str, list[str]],
        names: dict[str, str],
        tokens: dict[str, list[int]] | None = None,
        max_new_tokens: int | None = None,
        test: pl.DataFrame | None = None,
    ):
        self.generation, self.evals, self.steer, self.names = generation, evals, steer, names
        n_eval, n_steer = evals.height, steer.height
        counts = {role: (tokens or {}).get(role) or [None] * len(texts) for role, texts in replies.items()}
        self.tokens, self.max_new_tokens = {role: list(c) for role, c in counts.items()}, max_new_tokens
        ctx = [
            json.dumps(chat_messages(r["system"], r["history"]), ensure_ascii=False)
            for r in evals.select("system", "history").iter_rows(named=True)
        ]
        # who each prompt belongs to, so win-rate intervals resample users (absent columns stay null)
        owners = [
            pl.col(c).cast(pl.Utf8) if c in evals.columns else pl.lit(None, pl.Utf8).alias(c)
            for c in winrate_config.CLUSTER_COLUMNS
        ]
        self.sides = {
            role: evals.select(
                "prompt_id", pl.col("split").alias("slice"), pl.col("last_user").alias("prompt"), *owners
            ).with_columns(
                pl.Series("context", ctx, dtype=pl.Utf8),
                pl.Series("response", texts[:n_eval], dtype=pl.Utf8),
                pl.lit(names[role]).alias("policy"),
                *_token_columns(counts[role][:n_eval], max_new_tokens),
            )
            for role, texts in replies.items()
        }
        self.steer_replies = {role: texts[n_eval : n_eval + n_steer] for role, texts in replies.items()}
        # the test cards' replies come next: scored for the report and the benches, never read by a gate
        self.test = test if test is not None else steer.head(0)
        n_test = self.test.height
        self.test_replies = {
            role: texts[n_eval + n_steer : n_eval + n_steer + n_test] for role, texts in replies.items()
        }
        # None until `score_fluency` runs: no fluency gate then
        self.fluency_scores: pl.DataFrame | None = None
        self.fluency_summary: pl.DataFrame | None = None

    def judge(self, pointwise, pairwise, n_resamples: int = 2000, seed: int = 0, min_cluster_users: int = 20) -> None:
        """Win rates by both reward models (`n_resamples` bootstrap resamples), steerability scores and style
        monitors of both sides; a judge that is None (not trained) judges nothing."""
        self.wr = winrate.win_rate(
            self.sides["new"],
            self.sides["parent"],
            pointwise={JUDGES[0]: pointwise_judge(pointwise)} if pointwise is not None else {},
            pairwise={JUDGES[1]: utility_judge(pairwise)} if pairwise is not None else {},
            config=winrate_config.WinRateConfig(
                slices=SLICES,
                pairwise_output="utilities",
                n_resamples=n_resamples,
                seed=seed,
                min_cluster_users=min_cluster_users,
            ),
        )
        self.scored = {
            role: steerability.score_responses(self.steer.with_columns(pl.Series("response", texts, dtype=pl.Utf8)))
            for role, texts in self.steer_replies.items()
        }
        self.style = _style_rows(self.sides)
        self.steer_summary = self._summary(self.scored)
        self.test_scored = (
            {
                role: steerability.score_responses(self.test.with_columns(pl.Series("response", texts, dtype=pl.Utf8)))
                for role, texts in self.test_replies.items()
            }
            if self.test.height
            else {}
        )
        self.test_summary = self._summary(self.test_scored) if self.test_scored else pl.DataFrame()

    def _summary(self, scored: dict) -> pl.DataFrame:
        return pl.concat(
            [
                s.summary.with_columns(pl.lit(r).alias("role"), pl.lit(self.names[r]).alias("policy"))
                for r, s in scored.items()
            ]
        )

    def score_fluency(
        self,
        config: fluency.FluencyConfig,
        scorer: fluency.Scorer | None = None,
    ) -> None:
        """SLOR of both sides' eval replies under the reference model (`evaluation.fluency`). Its unigram term is
        counted on the human replies served to the same prompts, which do not move with the policies."""
        served = self.evals["served_response"].to_list() if "served_response" in self.evals.columns else None
        self.fluency_scores, self.fluency_summary = fluency.evaluate_fluency(
            self.sides, served, config, self.names, scorer
        )

    def gates(
        self,
        training: pl.DataFrame | None,
        config: gate_config.GateConfig,
        judge_validation: pl.DataFrame | None = None,
        ifeval: pl.DataFrame | None = None,
        ifeval_prompts: pl.DataFrame | None = None,
    ) -> dict[str, gate_config.GateResult]:
        """Every release gate, then the evidence rule over them; `training` None (nothing known of the training
        prompts) skips the disjoint gate; `judge_validation` (the judges' `reward_model_metrics` rows) decides
        which judges have the evidence to judge (None: every judge counts, as nothing says otherwise).
        `ifeval` (`ifeval_heldout.paired_differences`) adds the IFEval gate, and `ifeval_prompts` (prompt_id,
        text) the held-out IFEval prompts to the prompts no training set may contain."""
        style = {r["role"]: r for r in self.style.iter_rows(named=True)}
        judges = None
        if judge_validation is not None:
            judges = evidence.judge_evidence(judge_validation, config.judge_margin, config.min_judge_heldout)
            judges = {j: judges.get(j, {"sufficient": False, "reason": "no validation recorded"}) for j in JUDGES}
        gates = {
            "win_rate_ceiling": release_gates.win_rate_ceiling(self.wr.summary, config, judges),
            "slice_divergence": release_gates.slice_divergence(self.wr.summary, config, judges),
            "steerability_regression": release_gates.steerability_regression(
                self.scored["new"].summary,
                self.scored["parent"].summary,
                config,
                self.scored["new"].rows,
                self.scored["parent"].rows,
            ),
            "artifact_drift": release_gates.artifact_drift(style["new"], style["parent"], config),
        }
        if self.fluency_summary is not None:
            gates["fluency_regression"] = release_gates.fluency_regression(self.fluency_summary, config)
        if ifeval is not None:
            gates["ifeval_regression"] = release_gates.ifeval_regression(ifeval, config)
        if training is not None:
            held_out = [self.evals.select("prompt_id", "text")]
            if ifeval_prompts is not None:
                held_out.append(ifeval_prompts.select("prompt_id", "text"))
            gates["train_eval_disjoint"] = release_gates.train_eval_disjoint(
                training, pl.concat(held_out, how="vertical_relaxed"), config
            )
        gates["slice_divergence"].metadata.update(
            n_per_slice={s: int((self.evals["split"] == s).sum()) for s in SLICES},
            gap_ci95=_gap_intervals(self.wr.outcomes),
        )
        gates["evidence_rule"] = release_gates.evidence_rule(gates, config)
        return gates

    def records(self) -> pl.DataFrame:
        """eval_records rows per prompt and policy (the win-rate outcomes belong to the new generation)."""
        gen = self.generation
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
            if self.fluency_scores is not None and self.fluency_scores.height:
                slor = self.fluency_scores.filter(pl.col("role") == role)
                parts.append(
                    side.select("slice", "prompt_id", "policy")
                    .join(slor.select("prompt_id", "slor"), on="prompt_id", how="left")
                    .select(
                        "slice",
                        "prompt_id",
                        pl.lit("fluency/slor").alias("metric"),
                        pl.col("slor").alias("value"),
                        "policy",
                    )
                )
            suites = [(self.scored[role].rows, steerability.STAGE)]
            if role in self.test_scored:
                suites.append((self.test_scored[role].rows, TEST_STAGE))
            for rows, stage in suites:
                steer = steerability.eval_records(rows, gen, stage).with_columns(
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
        n_eval = self.evals.height
        steer = [
            self.steer.select(
                "prompt_id",
                pl.lit("steerability").alias("slice"),
                pl.lit(self.names[r]).alias("policy"),
                pl.lit(None, pl.Utf8).alias("context"),
                pl.Series("response", texts, dtype=pl.Utf8),
                *_token_columns(self.tokens[r][n_eval : n_eval + len(texts)], self.max_new_tokens),
            )
            for r, texts in self.steer_replies.items()
        ]
        n_steer = self.steer.height
        steer += [
            self.test.select(
                "prompt_id",
                pl.lit(TEST_STAGE).alias("slice"),
                pl.lit(self.names[r]).alias("policy"),
                pl.lit(None, pl.Utf8).alias("context"),
                pl.Series("response", texts, dtype=pl.Utf8),
                *_token_columns(self.tokens[r][n_eval + n_steer : n_eval + n_steer + len(texts)], self.max_new_tokens),
            )
            for r, texts in self.test_replies.items()
            if texts
        ]
        cols = ("prompt_id", "slice", "policy", "context", "response", "n_tokens", "ended")
        return pl.concat([s.select(cols) for s in self.sides.values()] + [s.select(cols) for s in steer])

    def samples(self, n: int = 3) -> pl.DataFrame:
        """`n` held-out card prompts and `n` pool prompts, parent and new replies side by side, with the rules each
        kept or broke (`evaluation.side_by_side`)."""
        pw = self.wr.outcomes.filter(pl.col("judge") == JUDGES[0])
        scores = {
            "new": dict(zip(pw["prompt_id"], pw["score_new"])),
            "parent": dict(zip(pw["prompt_id"], pw["score_prev"])),
        }
        scored = {role: s.rows for role, s in self.scored.items()}
        return side_by_side.side_by_side(
            side_by_side.card_samples(self.steer, scored, self.steer_replies, n)
            + side_by_side.pool_samples(self.sides, scores, n)
        )

    def drops(self) -> pl.DataFrame:
        return pl.concat([self.wr.drops, *(s.drops for s in self.scored.values())])

    def overview(self) -> dict[str, pl.DataFrame]:
        """The frames a person reads first: win rates, steerability and style of new vs parent, examples."""
        overall = {r["role"]: r for r in self.steer_summary.filter(pl.col("level") == "overall").iter_rows(named=True)}
        style = {r["role"]: r for r in self.style.iter_rows(named=True)}
        return {
            "win_rates": self.wr.summary.with_columns(pl.col("win_rate", "ci_low", "ci_high").round(3)),
            "steerability": compare(
                overall["new"], overall["parent"], ("following_rate", "violation_rate")
            ).with_columns(pl.col("parent", "new", "delta").round(3)),
            "violation_rate_by_instruction": self.steer_summary.filter(pl.col("level") == "instruction")
            .pivot("role", index="key", values="violation_rate")
            .rename({"key": "instruction"})
            .with_columns(pl.col(pl.Float64).round(3)),
            "style": compare(
                style["new"], style["parent"], [*style_monitor.MONITOR_METRICS, "false_refusal_rate"]
            ).with_columns(pl.col("parent", "new", "delta").round(4)),
            **(
                {"fluency": self.fluency_summary.with_columns(pl.col("mean_slor", "ci_low", "ci_high").round(3))}
                if self.fluency_summary is not None
                else {}
            ),
            "examples": self.sides["new"]
            .select("slice", "prompt", pl.col("response").alias("new"))
            .with_columns(self.sides["parent"]["response"].alias("parent")),
        }

    def following_rate(self, role: str = "new") -> float:
        overall = self.steer_summary.filter((pl.col("level") == "overall") & (pl.col("role") == role))
        return float(overall["following_rate"][0])


def score_ifeval(
    inputs: pl.DataFrame, replies: dict[str, list[str]], names: dict[str, str], n_resamples: int = 2000, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None, pl.DataFrame]:
    """IFEval summary per policy, its eval_records rows (prompt- and instruction-strict per prompt), new - parent
    on both accuracies with paired intervals (`ifeval_heldout.paired_differences`; None without both policies)
    and the prompts a policy's scoring dropped, with the reason."""
    from evaluation.ifeval import score_ifeval as score
    from evaluation.ifeval_heldout import paired_differences, per_prompt

    summaries, records, rows, drops = [], [], {}, []
    for role, texts in replies.items():
        res = score(inputs, pl.DataFrame({"prompt": inputs["prompt"], "response": texts}))
        rows[role] = res.rows
        drops.append(res.drops)
        summaries.append(res.summary.with_columns(pl.lit(role).alias("role"), pl.lit(names[role]).alias("policy")))
        scored = per_prompt(res.rows).with_columns(pl.col("key").cast(pl.Utf8).alias("prompt_id"))
        for metric, value in {
            "ifeval/prompt_strict": pl.col("prompt_followed").cast(pl.Float64),
            "ifeval/instruction_strict": pl.col("followed") / pl.col("instructions"),
        }.items():
            records.append(
                scored.select(
                    pl.lit("ifeval").alias("slice"),
                    "prompt_id",
                    pl.lit(metric).alias("metric"),
                    value.cast(pl.Float64).alias("value"),
                    pl.lit(names[role]).alias("policy"),
                )
            )
    differences = (
        paired_differences(rows["parent"], rows["new"], n_resamples, seed) if {"new", "parent"} <= rows.keys() else None
    )
    return pl.concat(summaries), pl.concat(records), differences, pl.concat(drops)


def gate_table(gates: dict[str, gate_config.GateResult]) -> pl.DataFrame:
    """The `release_gates` table: one row per gate, its metadata as JSON."""
    return pl.DataFrame(
        [
            {
                "gate": name,
                "passed": g.passed,
                "severity": g.severity,
                "detail": g.detail,
                "metadata": json_document(g.metadata),
            }
            for name, g in gates.items()
        ],
        schema={"gate": pl.Utf8, "passed": pl.Boolean, "severity": pl.Utf8, "detail": pl.Utf8, "metadata": pl.Utf8},
    )
