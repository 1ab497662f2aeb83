"""Release gates: checks a new generation must pass before it is shipped to an A/B test.

They block the failure modes of a flywheel that optimizes against its own judges:

- `win_rate_ceiling`: a win rate over the previous generation above `win_rate_error` (0.65) on any
  slice is treated as a sign of reward hacking or judge overfitting, not of real progress (warn above
  `win_rate_warn`, 0.60). Real generation-over-generation gains on chat are small.
- `slice_divergence`: |win rate on eval_user - win rate on eval_internal| above `slice_divergence_max`
  (0.10) for any judge means the model improved on one population only (overfit to internal testers,
  or to the traffic it was trained on), when the gap is also beyond the slices' noise
  (`slice_divergence_z` standard errors); a larger gap within noise warns.
- `steerability`: the instruction-following rate may not drop by more than `steerability_tolerance`
  against the previous generation when its paired interval over the card prompts excludes no drop (error);
  a larger drop within that noise warns, and so does an instruction type whose violation rate rises by more
  than that tolerance.
- `artifact_drift`: each style monitor (mean length, list, emoji, stock-phrase, refusal rates) must
  stay inside its band around the previous generation: relative bands for lengths, absolute for
  rates. Beyond `artifact_warn_fraction` of a band warns; outside it fails.
- `fluency_regression`: the new generation's replies may not be less fluent than the parent's: mean SLOR under
  a reference LM (`evaluation.fluency`) with the paired interval of new - parent entirely below
  -`fluency_margin` fails; a mean difference below it whose interval reaches above warns. Insufficient with
  fewer than `min_fluency_replies` paired replies, or without the reference model.
- `ifeval_regression` (when IFEval prompts are configured): instruction-strict or prompt-strict accuracy on the
  held-out IFEval half (`evaluation.ifeval_heldout`) with its paired interval entirely below -`ifeval_margin`
  fails; a lower mean whose interval reaches the margin warns. Insufficient below `min_ifeval_prompts`.
- `train_eval_disjoint`: no eval prompt (the held-out IFEval prompts included) may appear in the training
  prompts, by id or by normalized text (case and whitespace folded).

Each gate returns a `GateResult` (passed, severity, detail, metadata); severity is "ok", "warn",
"insufficient" or "error". Only "error" fails the gate; "insufficient" means the evidence falls below a
stated minimum (`evaluation.evidence`): a slice with too few users, a judge that does not beat the
length baseline on held-out data. It does not pass, and it does not block on its own: `evidence_rule`
says what a release needs (at least `min_decided_gates` gates decided, none failed). Every gate's
metadata carries the `evidence` behind it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl

from evaluation import evidence
from evaluation.gate_config import GateConfig, GateResult, gate_result, worst_severity
from evaluation.steerability import following_difference
from pipeline.digest import rows_digest


def _with_evidence(
    win_rates: pl.DataFrame, config: GateConfig, judges: Mapping[str, dict] | None
) -> tuple[pl.DataFrame, list[str], dict]:
    """(rows with enough evidence, why the others were left out, the evidence): a slice with fewer than
    `min_slice_users` users (when the summary counts them) and a judge `judges` calls insufficient are out."""
    rows = win_rates.filter(pl.col("win_rate").is_not_null())
    left_out = []
    if "users" in rows.columns:
        # a summary that does not know its users (no ids on the replies) is not called insufficient for it
        too_few = pl.col("users").fill_null(config.min_slice_users) < config.min_slice_users
        few = rows.filter(too_few)
        left_out += [
            f"{s}: {u} users (< {config.min_slice_users})"
            for s, u in few.select("slice", "users").unique(maintain_order=True).iter_rows()
        ]
        rows = rows.filter(~too_few)
    for judge, ev in (judges or {}).items():
        if not ev.get("sufficient") and judge in rows["judge"].to_list():
            left_out.append(f"judge {judge}: {ev.get('reason')}")
            rows = rows.filter(pl.col("judge") != judge)
    return rows, left_out, {"slices": evidence.evidence_of(win_rates), "judges": dict(judges or {})}


def win_rate_ceiling(
    win_rates: pl.DataFrame, config: GateConfig | None = None, judges: Mapping[str, dict] | None = None
) -> GateResult:
    """`win_rates`: the (slice, judge, n, win_rate, ci_low, ci_high[, users]) frame of `evaluation.winrate`;
    `judges`: `evidence.judge_evidence` of the judges. Decided on the slices and judges with enough evidence;
    insufficient when none has it."""
    config = config or GateConfig()
    present = win_rates.filter(pl.col("slice").is_in(config.slices) & pl.col("win_rate").is_not_null())
    if present.height == 0:
        return gate_result("win_rate_ceiling", "error", "no win rate for the configured slices", slices=config.slices)
    rows, left_out, ev = _with_evidence(present, config, judges)
    if rows.height == 0:
        return gate_result(
            "win_rate_ceiling", "insufficient", "insufficient evidence: " + "; ".join(left_out), evidence=ev
        )
    levels, flagged = [], []
    for r in rows.iter_rows(named=True):
        wr = r["win_rate"]
        level = "error" if wr > config.win_rate_error else "warn" if wr > config.win_rate_warn else "ok"
        levels.append(level)
        if level != "ok":
            flagged.append(f"{r['slice']}/{r['judge']}={wr:.3f}")
    missing = sorted(set(config.slices) - set(present["slice"].to_list()))
    if missing:
        levels.append("error")
        flagged.append(f"no win rate for {missing}")
    severity = worst_severity(levels)
    detail = "win rates within the ceiling" if severity == "ok" else "; ".join(flagged)
    if left_out:
        detail += f" (not counted, insufficient evidence: {'; '.join(left_out)})"
    return gate_result(
        "win_rate_ceiling",
        severity,
        detail,
        max_win_rate=float(rows["win_rate"].max()),
        win_rates={f"{r['slice']}/{r['judge']}": r["win_rate"] for r in rows.iter_rows(named=True)},
        error_above=config.win_rate_error,
        warn_above=config.win_rate_warn,
        evidence=ev,
        left_out=left_out,
    )


def _standard_error(row: dict) -> float:
    """A win rate's standard error read off its 95% interval; 0 when it has none."""
    if row.get("ci_low") is None or row.get("ci_high") is None:
        return 0.0
    return (row["ci_high"] - row["ci_low"]) / (2 * 1.96)


def slice_divergence(
    win_rates: pl.DataFrame, config: GateConfig | None = None, judges: Mapping[str, dict] | None = None
) -> GateResult:
    """|win rate(second slice) - win rate(first slice)| per judge, within `slice_divergence_max`; a larger gap
    that is within `slice_divergence_z` standard errors of 0 (small slices) warns instead of failing.
    Insufficient when a slice has too few users or no judge with both slices has the evidence to judge."""
    config = config or GateConfig()
    a, b = config.slices
    rows, left_out, ev = _with_evidence(win_rates, config, judges)

    def paired(frame: pl.DataFrame) -> bool:  # some judge has a win rate on both slices
        return any({a, b} <= set(g["slice"].to_list()) for _, g in frame.group_by("judge"))

    if not paired(rows) and paired(win_rates.filter(pl.col("win_rate").is_not_null())):
        return gate_result(
            "slice_divergence", "insufficient", "insufficient evidence: " + "; ".join(left_out), evidence=ev
        )
    wide: dict[str, dict[str, dict]] = {}
    for r in rows.iter_rows(named=True):
        wide.setdefault(r["judge"], {})[r["slice"]] = r
    gaps, z = {}, {}
    for judge, v in wide.items():
        if a in v and b in v:
            gaps[judge] = abs(v[b]["win_rate"] - v[a]["win_rate"])
            se = (_standard_error(v[a]) ** 2 + _standard_error(v[b]) ** 2) ** 0.5
            z[judge] = gaps[judge] / se if se > 0 else float("inf")
    if not gaps:
        return gate_result("slice_divergence", "error", f"no judge has win rates on both {a} and {b}")
    over = {j for j, g in gaps.items() if g > config.slice_divergence_max}
    real = sorted(j for j in over if z[j] >= config.slice_divergence_z)
    worst = max(gaps, key=gaps.get)
    sizes = {s: wide[worst][s].get("n") for s in (a, b)}
    if real:
        j = max(real, key=gaps.get)
        severity = "error"
        detail = f"{j}: |{b} - {a}| = {gaps[j]:.3f} > {config.slice_divergence_max} ({z[j]:.1f} standard errors)"
    elif over:
        severity = "warn"
        detail = (
            f"{worst}: |{b} - {a}| = {gaps[worst]:.3f} > {config.slice_divergence_max}, but only {z[worst]:.1f} "
            f"standard errors from 0 (prompts per slice: {sizes}): within noise"
        )
    else:
        severity = "ok"
        detail = f"largest gap {gaps[worst]:.3f} ({worst}) within {config.slice_divergence_max}"
    if left_out:
        detail += f" (not counted, insufficient evidence: {'; '.join(left_out)})"
    return gate_result(
        "slice_divergence",
        severity,
        detail,
        gaps=gaps,
        z=z,
        max_gap=gaps[worst],
        limit=config.slice_divergence_max,
        evidence=ev,
        left_out=left_out,
    )


def _rates(summary: pl.DataFrame, level: str, col: str) -> dict[str, float]:
    return {r["key"]: r[col] for r in summary.filter(pl.col("level") == level).iter_rows(named=True)}


def steerability_regression(
    new_summary: pl.DataFrame,
    prev_summary: pl.DataFrame,
    config: GateConfig | None = None,
    new_rows: pl.DataFrame | None = None,
    prev_rows: pl.DataFrame | None = None,
) -> GateResult:
    """Compare two `evaluation.steerability` summaries (levels overall / instruction). With both sides' per-reply
    rows (`prompt_id`, `all_followed`, and `checks` for the rules; a prompt's samples suffixed `#k`), each change
    also gets a paired bootstrap interval over the card prompts: the overall following rate's drop and each rule's
    violation-rate rise beyond the tolerance fail when the interval excludes no change at all, and warn when they
    are within that noise (a few dozen card prompts move a rate by several points between two samplings of the
    same policy, so a change the evidence cannot tell from zero is not a verdict). A generation that keeps the
    overall rate while forgetting one rule (asked for lowercase, it writes capitals) fails on that rule."""
    config = config or GateConfig()
    new_all = _rates(new_summary, "overall", "following_rate")
    prev_all = _rates(prev_summary, "overall", "following_rate")
    if "all" not in new_all or "all" not in prev_all:
        return gate_result("steerability", "error", "a steerability summary has no overall row")
    drop = prev_all["all"] - new_all["all"]
    new_v = _rates(new_summary, "instruction", "violation_rate")
    prev_v = _rates(prev_summary, "instruction", "violation_rate")
    rises = {
        k: new_v[k] - prev_v[k] for k in new_v if k in prev_v and new_v[k] - prev_v[k] > config.steerability_tolerance
    }
    interval = _following_interval(new_rows, prev_rows)
    rules = rule_intervals(new_rows, prev_rows)
    tol = config.steerability_tolerance + 1e-12
    fell = f"instruction-following rate fell {drop:.3f} (> {config.steerability_tolerance})"
    levels, notes = [], []
    if drop > tol and interval is not None and interval["ci_high"] >= 0:
        levels.append("warn")
        notes.append(
            f"{fell}, within noise: paired 95% interval of new - parent [{interval['ci_low']:+.3f}, "
            f"{interval['ci_high']:+.3f}] over {interval['n_prompts']} card prompts includes no drop"
        )
    elif drop > tol:
        levels.append("error")
        notes.append(
            fell
            + (
                f", paired 95% interval [{interval['ci_low']:+.3f}, {interval['ci_high']:+.3f}] over "
                f"{interval['n_prompts']} card prompts"
                if interval is not None
                else ""
            )
        )
    rule_by_name = {r["rule"]: r for r in rules}
    forgotten = sorted(
        k
        for k in rises
        if k in rule_by_name and (rule_by_name[k]["ci_low"] is not None and rule_by_name[k]["ci_low"] > 0)
    )
    noisy = sorted(k for k in rises if k not in forgotten)
    if forgotten:
        levels.append("error")
        notes.append("rules forgotten: " + ", ".join(_rule_text(k, rises[k], rule_by_name.get(k)) for k in forgotten))
    if noisy:
        levels.append("warn")
        within = " within noise" if any(k in rule_by_name for k in noisy) else ""
        notes.append(
            f"violation rates rose{within}: " + ", ".join(_rule_text(k, rises[k], rule_by_name.get(k)) for k in noisy)
        )
    severity = worst_severity(levels) if levels else "ok"
    detail = "; ".join(notes) or f"instruction-following rate {new_all['all']:.3f} (previous {prev_all['all']:.3f})"
    return gate_result(
        "steerability",
        severity,
        detail,
        following_rate=new_all["all"],
        previous_following_rate=prev_all["all"],
        drop=drop,
        ci_low=None if interval is None else interval["ci_low"],
        ci_high=None if interval is None else interval["ci_high"],
        violation_rises=rises,
        forgotten_rules=forgotten,
        rules=rules,
        tolerance=config.steerability_tolerance,
        evidence={
            "replies": {"new": _overall_n(new_summary), "parent": _overall_n(prev_summary)},
            **({"card_prompts": interval["n_prompts"]} if interval is not None else {}),
        },
    )


def _rule_text(rule: str, rise: float, interval: dict | None) -> str:
    if interval is None or interval["ci_low"] is None:
        return f"{rule} +{rise:.3f}"
    return (
        f"{rule} +{rise:.3f} (paired 95% interval [{interval['ci_low']:+.3f}, {interval['ci_high']:+.3f}] over "
        f"{interval['n_prompts']} card prompts)"
    )


def rule_intervals(new_rows: pl.DataFrame | None, prev_rows: pl.DataFrame | None) -> list[dict]:
    """Per rule type: its violation rate on each side, the rise (new - parent) and a paired bootstrap interval over
    the card prompts that carry the rule (a prompt's samples averaged); the interval is None with fewer than 2
    shared prompts. Empty without both sides' per-reply `checks`."""
    if new_rows is None or prev_rows is None or "checks" not in new_rows.columns or "checks" not in prev_rows.columns:
        return []

    def per_prompt(rows: pl.DataFrame) -> pl.DataFrame:
        if rows.is_empty():
            return pl.DataFrame(schema={"prompt_id": pl.Utf8, "instruction": pl.Utf8, "value": pl.Float64})
        return (
            rows.select(pl.col("prompt_id").str.replace(r"#\d+$", ""), "checks")
            .explode("checks")
            .unnest("checks")
            .group_by("prompt_id", "instruction")
            .agg((1.0 - pl.col("passed").cast(pl.Float64)).mean().alias("value"))
        )

    prev, new = per_prompt(prev_rows), per_prompt(new_rows)
    out = []
    for rule in sorted(set(prev["instruction"].drop_nulls()) & set(new["instruction"].drop_nulls())):
        a, b = prev.filter(pl.col("instruction") == rule), new.filter(pl.col("instruction") == rule)
        shared = a.join(b, on="prompt_id").height
        if shared < 2:
            out.append(
                {
                    "rule": rule,
                    "parent": None,
                    "new": None,
                    "rise": None,
                    "ci_low": None,
                    "ci_high": None,
                    "n_prompts": shared,
                }
            )
            continue
        d = following_difference(a, b)
        out.append(
            {
                "rule": rule,
                "parent": d["base"],
                "new": d["new"],
                "rise": d["difference"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                "n_prompts": d["n_prompts"],
            }
        )
    return out


def _following_interval(new_rows: pl.DataFrame | None, prev_rows: pl.DataFrame | None) -> dict | None:
    """`steerability.following_difference` of the two sides' per-prompt following rates (a prompt's samples
    averaged), or None without rows on both sides or with fewer than 2 shared prompts."""
    if new_rows is None or prev_rows is None or new_rows.is_empty() or prev_rows.is_empty():
        return None

    def per_prompt(rows: pl.DataFrame) -> pl.DataFrame:
        return rows.group_by(pl.col("prompt_id").str.replace(r"#\d+$", "")).agg(
            pl.col("all_followed").cast(pl.Float64).mean().alias("value")
        )

    prev, new = per_prompt(prev_rows), per_prompt(new_rows)
    if prev.join(new, on="prompt_id").height < 2:
        return None
    return following_difference(prev, new)


def _overall_n(summary: pl.DataFrame) -> int | None:
    rows = summary.filter(pl.col("level") == "overall")
    return int(rows["n"][0]) if "n" in rows.columns and rows.height and rows["n"][0] is not None else None


# the monitors measured on the replies that ended on their own (`style_monitor.monitor`)
ENDED_LENGTHS = ("mean_chars", "mean_words")


def artifact_drift(new: pl.DataFrame | dict, prev: pl.DataFrame | dict, config: GateConfig | None = None) -> GateResult:
    """Compare two one-row `evaluation.style_monitor.monitor` outputs (or metric dicts) band by band.
    A metric missing on either side is an error: a monitor that stopped reporting is not a pass. Lengths are
    those of the replies that ended on their own; `cut_off_rate` (replies run into the token limit) has a band
    of its own that bounds its rise."""
    config = config or GateConfig()
    new = new.row(0, named=True) if isinstance(new, pl.DataFrame) else dict(new)
    prev = prev.row(0, named=True) if isinstance(prev, pl.DataFrame) else dict(prev)
    evidence = {
        "replies": {"new": new.get("n"), "parent": prev.get("n")},
        "min_replies": config.min_artifact_replies,
        **(
            {"ended": {"new": new.get("n_ended"), "parent": prev.get("n_ended")}}
            if new.get("n_ended") is not None
            else {}
        ),
    }
    few = [
        f"{side} {row['n']}"
        for side, row in (("new", new), ("parent", prev))
        if row.get("n") is not None and row["n"] < config.min_artifact_replies
    ]
    if few:
        return gate_result(
            "artifact_drift",
            "insufficient",
            f"insufficient evidence: {', '.join(few)} replies (< {config.min_artifact_replies})",
            evidence=evidence,
        )
    levels, drifts, notes = [], {}, []
    for metric, (kind, width) in config.artifact_bands.items():
        a, b = new.get(metric), prev.get(metric)
        unended = [side for side, row in (("new", new), ("parent", prev)) if row.get("n_ended") == 0]
        if metric in ENDED_LENGTHS and unended:
            # every reply ran into the token limit: no length to compare, and cut_off_rate's band decides
            levels.append("warn")
            notes.append(f"{metric}: not compared, no reply of the {' or '.join(unended)} ended on its own")
            continue
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            levels.append("error")
            notes.append(f"{metric}: missing")
            continue
        if kind == "relative":
            drift = abs(a - b) / abs(b) if b else (0.0 if a == b else math.inf)
        elif kind == "rise":
            drift = max(a - b, 0.0)
        else:
            drift = abs(a - b)
        drifts[metric] = drift
        level = "error" if drift > width else "warn" if drift > config.artifact_warn_fraction * width else "ok"
        levels.append(level)
        if level != "ok":
            notes.append(f"{metric}: {b:.4g} -> {a:.4g} ({kind} drift {drift:.3g}, band {width})")
    severity = worst_severity(levels)
    return gate_result(
        "artifact_drift",
        severity,
        "; ".join(notes) or "all style metrics within their bands",
        drifts=drifts,
        bands=dict(config.artifact_bands),
        evidence=evidence,
    )


def fluency_regression(summary: pl.DataFrame, config: GateConfig | None = None) -> GateResult:
    """Read the `evaluation.fluency.summarize` frame (rows new, parent and difference; or `unavailable`'s rows,
    whose `reason` says why nothing was scored)."""
    config = config or GateConfig()
    rows = {r["role"]: r for r in summary.iter_rows(named=True)}
    means = {role: rows.get(role, {}).get("mean_slor") for role in ("new", "parent")}
    diff = rows.get("difference")
    n = int(diff["n"]) if diff and diff.get("n") is not None else 0
    ev = {
        "replies": {role: rows.get(role, {}).get("n") for role in ("new", "parent")},
        "paired": n,
        "min_paired": config.min_fluency_replies,
    }
    if diff is not None:
        ev.update(interval_by=diff.get("unit"), clusters=diff.get("clusters"))
    reasons = [r["reason"] for r in rows.values() if r.get("reason")]
    if diff is None or n < config.min_fluency_replies or diff.get("mean_slor") is None:
        why = reasons[0] if reasons else f"{n} paired replies scored (< {config.min_fluency_replies})"
        return gate_result(
            "fluency_regression", "insufficient", f"insufficient evidence: {why}", evidence=ev, mean_slor=means
        )
    delta, lo, hi = diff["mean_slor"], diff.get("ci_low"), diff.get("ci_high")
    limit = -config.fluency_margin
    ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "[no interval]"
    text = f"mean SLOR {means['parent']:.3f} -> {means['new']:.3f} (new - parent {delta:+.3f} {ci}, {n} prompts)"
    if hi is not None and hi < limit:
        severity, detail = "error", f"less fluent: {text}, interval below -{config.fluency_margin}"
    elif delta < limit:
        severity, detail = "warn", f"{text}: mean below -{config.fluency_margin}, interval reaches above it"
    else:
        severity, detail = "ok", text
    return gate_result(
        "fluency_regression",
        severity,
        detail,
        difference=delta,
        ci_low=lo,
        ci_high=hi,
        margin=config.fluency_margin,
        evidence=ev,
        mean_slor=means,
    )


IFEVAL_METRICS = ("instruction_strict", "prompt_strict")


def ifeval_regression(differences: pl.DataFrame, config: GateConfig | None = None) -> GateResult:
    """Read `evaluation.ifeval_heldout.paired_differences` (one row per accuracy: parent, new, difference and
    its paired interval over the held-out IFEval prompts). Either accuracy decided lower (whole interval below
    -`ifeval_margin`) fails; a lower mean whose interval reaches the margin warns."""
    config = config or GateConfig()
    rows = {r["metric"]: r for r in differences.iter_rows(named=True)}
    n = max((int(r["n_prompts"]) for r in rows.values()), default=0)
    ev = {"paired_prompts": n, "min_prompts": config.min_ifeval_prompts, "interval_by": "prompt"}
    accuracies = {m: {k: rows[m][k] for k in ("parent", "new", "difference", "ci_low", "ci_high")} for m in rows}
    if n < config.min_ifeval_prompts or any(m not in rows for m in IFEVAL_METRICS):
        return gate_result(
            "ifeval_regression",
            "insufficient",
            f"insufficient evidence: {n} held-out IFEval prompts scored for both policies "
            f"(< {config.min_ifeval_prompts})",
            evidence=ev,
            accuracies=accuracies,
        )
    limit = -config.ifeval_margin
    texts, decided, lower = [], [], []
    for m in IFEVAL_METRICS:
        r = rows[m]
        texts.append(
            f"{m} {r['parent']:.3f} -> {r['new']:.3f} ({r['difference']:+.3f} "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}])"
        )
        if r["ci_high"] < limit:
            decided.append(m)
        elif r["difference"] < limit:
            lower.append(m)
    text = f"{'; '.join(texts)} over {n} held-out prompts"
    if decided:
        severity, detail = "error", f"IFEval lower: {text}; {', '.join(decided)} interval below {limit:+.3f}"
    elif lower:
        severity, detail = "warn", f"{text}: {', '.join(lower)} lower, interval reaches {limit:+.3f}"
    else:
        severity, detail = "ok", text
    return gate_result(
        "ifeval_regression", severity, detail, margin=config.ifeval_margin, evidence=ev, accuracies=accuracies
    )


def text_key(expr: pl.Expr) -> pl.Expr:
    """A prompt's text as the train/eval gate compares it: lower case, runs of white space as one space."""
    return expr.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def train_eval_disjoint(
    train: pl.DataFrame, eval_: pl.DataFrame, config: GateConfig | None = None, text_col: str = "text"
) -> GateResult:
    """Eval prompts (prompt_id, text) found in the training prompts by id or normalized text."""
    config = config or GateConfig()
    ids = set(train["prompt_id"].to_list()) & set(eval_["prompt_id"].to_list())
    by_text = set()
    if text_col in train.columns and text_col in eval_.columns:
        tkeys = set(train.select(text_key(pl.col(text_col)).alias("k"))["k"].drop_nulls().to_list())
        ev = eval_.select("prompt_id", text_key(pl.col(text_col)).alias("k")).drop_nulls("k")
        by_text = {r["prompt_id"] for r in ev.iter_rows(named=True) if r["k"] in tkeys}
    overlap = sorted(ids | by_text)
    ok = len(overlap) <= config.max_train_eval_overlap
    digest = rows_digest(overlap)[:16]
    detail = (
        f"{len(overlap)} eval prompts overlap training (allowed {config.max_train_eval_overlap})"
        if overlap
        else "train and eval prompts are disjoint"
    )
    return gate_result(
        "train_eval_disjoint",
        "ok" if ok else "error",
        detail,
        n_overlap=len(overlap),
        n_overlap_by_id=len(ids),
        n_overlap_by_text=len(by_text),
        examples=overlap[:10],
        overlap_digest=digest,
        evidence={"train_prompts": train.height, "eval_prompts": eval_.height},
    )


def evidence_rule(gates: Mapping[str, GateResult], config: GateConfig | None = None) -> GateResult:
    """The release rule over the other gates (`evidence.release_rule`): it fails when fewer than
    `min_decided_gates` of them had the evidence to decide."""
    config = config or GateConfig()
    severity, detail, meta = evidence.release_rule(
        {name: g.severity for name, g in gates.items()}, config.min_decided_gates
    )
    return gate_result("evidence_rule", severity, detail, **meta)


def release_decision(results: list[GateResult]) -> GateResult:
    """All gates together: fails when any gate fails; warns when any warns; a gate with insufficient evidence
    neither passes nor fails (the evidence rule, when among `results`, bounds how many may be)."""
    severity = worst_severity([r.severity for r in results if r.severity != "insufficient"]) if results else "error"
    failed = [r.metadata.get("gate") for r in results if r.severity == "error"]
    warned = [r.metadata.get("gate") for r in results if r.severity == "warn"]
    insufficient = [r.metadata.get("gate") for r in results if r.severity == "insufficient"]
    detail = (
        f"blocked by {failed}"
        if failed
        else f"passed with warnings from {warned}"
        if warned
        else "all gates passed"
        if results
        else "no gate ran"
    )
    if insufficient and results:
        detail += f"; insufficient evidence for {insufficient}"
    return gate_result(
        "release", severity, detail, failed=failed, warned=warned, insufficient=insufficient, n_gates=len(results)
    )
