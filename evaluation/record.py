"""A generation's record: its metrics document and the content hashes of what it was built from.

`collect_metrics` turns the tables of a generation's evaluation, A/B readout and reward-model report into
the `metrics` document of the `generations` table (its keys are listed in `evaluation.generations_table`).
The hashes (`pipeline.digest`) name files by content, so the same inputs always give the same hash and a changed
byte changes it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path

import polars as pl

from evaluation import evidence, style_monitor
from evaluation.generations_table import run_chart_columns
from pipeline.digest import dir_digest, files_digest
from training.rewards.judge_minimums import NOT_TRAINED_ROW

METRICS_TABLES = (
    "eval_win_rates",
    "eval_steerability",
    "eval_steerability_test",
    "eval_style",
    "eval_fluency",
    "eval_ifeval",
    "eval_ifeval_difference",
    "reward_model_metrics",
    "ab_lifts",
    "ab_arms",
    "ab_srm",
    "eval_samples",
)


def json_document(value) -> str:
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


def _by_role(frame: pl.DataFrame, keys: tuple[str, ...]) -> dict:
    return {r["role"]: {k: r.get(k) for k in keys} for r in frame.iter_rows(named=True)} if frame.height else {}


def _ab(lifts: pl.DataFrame, arms: pl.DataFrame, srm: pl.DataFrame) -> dict:
    skip = ("metric", "generation", "source", "simulated", "simulated_from", "verdict", "reason", "evidence")
    evidence = lifts["evidence"][0] if "evidence" in lifts.columns else None
    return {
        "evidence": json.loads(evidence) if evidence else None,
        "source": lifts["source"][0],
        "simulated": bool(lifts["simulated"][0]),
        "simulated_from": lifts["simulated_from"][0] if "simulated_from" in lifts.columns else None,
        "verdict": lifts["verdict"][0],
        "reason": lifts["reason"][0],
        "lifts": {r["metric"]: {k: v for k, v in r.items() if k not in skip} for r in lifts.iter_rows(named=True)},
        "srm": srm.drop("generation", strict=False).row(0, named=True) if srm.height else {},
        "arms": arms.drop("generation", strict=False).to_dicts(),
    }


def collect_metrics(tables: Mapping[str, pl.DataFrame]) -> dict:
    """The `metrics` document of a generation from its tables (`METRICS_TABLES`); a missing or empty table
    leaves its key out."""

    def get(name: str) -> pl.DataFrame:
        return tables.get(name, pl.DataFrame())

    wr, steer, style, rm, ifeval = (
        get(t) for t in ("eval_win_rates", "eval_steerability", "eval_style", "reward_model_metrics", "eval_ifeval")
    )
    metrics: dict = {"version": 1}
    if wr.height:
        metrics["win_rates"] = wr.select("slice", "judge", "n", "win_rate", "ci_low", "ci_high").to_dicts()
    if steer.height:
        metrics["steerability"] = _by_role(
            steer.filter(pl.col("level") == "overall"), ("following_rate", "violation_rate", "n")
        )
    # the test cards: shown beside the held-out ones, read by no gate
    steer_test = get("eval_steerability_test")
    if steer_test.height:
        metrics["steerability_test"] = _by_role(
            steer_test.filter(pl.col("level") == "overall"), ("following_rate", "violation_rate", "n")
        )
    if style.height:
        metrics["style"] = _by_role(style, (*style_monitor.MONITOR_METRICS, "false_refusal_rate", "n"))
    fluency = get("eval_fluency")
    if fluency.height:
        metrics["fluency"] = {
            r["role"]: {k: r.get(k) for k in ("mean_slor", "n", "ci_low", "ci_high", "unit", "reason")}
            for r in fluency.iter_rows(named=True)
        }
    if rm.height and {"model", "section", "metric", "value"} <= set(rm.columns):
        rows = rm.filter(pl.col("section").is_in(["pointwise", "pairwise"]) & pl.col("value").is_not_null())
        metrics["reward_models"] = {
            m: dict(zip(g["metric"], g["value"])) for (m,), g in rows.group_by("model", maintain_order=True)
        }
        unmade = rm.filter((pl.col("section") == NOT_TRAINED_ROW[0]) & (pl.col("metric") == NOT_TRAINED_ROW[1]))
        if unmade.height:
            # judges the traffic had too little data to train: what they counted and why they are not judges
            metrics["judges_not_trained"] = {
                r["model"]: {"count": r["n"], "reason": str(r["detail"] or "not trained").split(";")[0]}
                for r in unmade.iter_rows(named=True)
            }
    if get("ab_lifts").height:
        metrics["ab"] = _ab(get("ab_lifts"), get("ab_arms"), get("ab_srm"))
    samples = get("eval_samples")
    if samples.height:
        metrics["samples"] = samples.drop("generation", strict=False).to_dicts()
    if ifeval.height:
        metrics["ifeval"] = {
            r["role"]: {k: v for k, v in r.items() if k.endswith("_acc") or k == "n_prompts"}
            for r in ifeval.iter_rows(named=True)
        }
        # new - parent on the held-out IFEval prompts, with the paired interval the IFEval gate read
        differences = get("eval_ifeval_difference")
        if differences.height:
            metrics["ifeval"]["difference"] = {
                r["metric"]: {k: v for k, v in r.items() if k != "metric"} for r in differences.iter_rows(named=True)
            }
    return metrics


def _manifest(directory: Path) -> dict:
    path = directory / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def lineage_inputs(
    window_files: Mapping[str, Iterable[Path]],
    dataset_dirs: Mapping[str, Path],
    candidate_files: Iterable[Path],
    reward_model_dirs: Mapping[str, Path],
    parent_policy: str,
    annotations_path: str | None,
) -> dict:
    """The `inputs` document: content hashes of what a generation was built from (the window's prompt files
    per day, its datasets' manifests, its candidates and reward models) and its parent policy."""
    manifests = {n: _manifest(d) for n, d in dataset_dirs.items()}
    return {
        "window": {"days": list(window_files), "prompts_sha256": {d: files_digest(f) for d, f in window_files.items()}},
        "datasets": {n: m.get("content_hash") for n, m in manifests.items()},
        "dataset_rows": {n: m.get("rows") for n, m in manifests.items()},
        "candidates_sha256": files_digest(candidate_files),
        "reward_models": {k: {"path": str(d), "sha256": dir_digest(d)} for k, d in reward_model_dirs.items()},
        "parent_policy": parent_policy,
        "annotations_path": annotations_path,
    }


def generation_row(
    plan: Mapping, recorded_at: str, gates: pl.DataFrame, metrics: dict, inputs: dict, checkpoints: dict
) -> dict:
    """The generation's row of the `generations` table (`evaluation.generations_table.GENERATIONS`).

    `plan` holds generation, number, parent, created_at and days. A generation whose release gates failed is
    recorded as blocked (`released` false, `blocked_by` naming the gates, no A/B readout): it is never a
    parent, and the next generation starts from the last released one. A released generation whose A/B
    readout is missing or invalid is not recorded: the error says what to do.
    """
    name = plan["generation"]
    if gates.is_empty():
        raise ValueError(f"{name} has no release-gate results: materialize offline_eval first")
    blocked_by = gates.filter(pl.col("severity") == "error")["gate"].to_list()
    insufficient = gates.filter(pl.col("severity") == "insufficient")["gate"].to_list()
    ab = metrics.get("ab") if not blocked_by else None
    if not blocked_by and ab is None:
        raise ValueError(f"{name} has no A/B readout: materialize ab_readout first")
    if ab is not None and ab["verdict"] == "invalid":
        raise ValueError(f"{name}'s A/B readout is invalid ({ab['reason']}): fix the experiment first")
    if blocked_by:
        metrics = {k: v for k, v in metrics.items() if k != "ab"}  # a blocked generation is never A/B tested
    metrics = {**metrics, "improvement": improvement(gates, ab, bool(blocked_by))}
    gate = "failed" if blocked_by else "passed_with_warnings" if (gates["severity"] == "warn").any() else "passed"
    return {
        "generation": name,
        "number": plan["number"],
        "parent": plan["parent"],
        "created_at": plan["created_at"],
        "recorded_at": recorded_at,
        "window_start": date.fromisoformat(plan["days"][0]),
        "window_end": date.fromisoformat(plan["days"][-1]),
        "days": list(plan["days"]),
        "inputs": json_document(inputs),
        "checkpoints": json_document(checkpoints),
        "metrics": json_document(metrics),
        "gate": gate,
        "gate_detail": json_document(gate_verdicts(gates)),
        "ab_verdict": ab["verdict"] if ab else None,
        "ab_source": ab["source"] if ab else None,
        **run_chart_columns(metrics, blocked_by),
        "insufficient": sorted(insufficient + (["ab_readout"] if ab and ab["verdict"] == "insufficient" else []))
        + [f"{judge} judge {v['reason']}" for judge, v in sorted((metrics.get("judges_not_trained") or {}).items())],
    }


def improvement(gates: pl.DataFrame, ab: Mapping | None, blocked: bool) -> dict:
    """Whether the evidence decides that the generation improves on its parent, and on what: its held-out
    instruction following with the paired interval over the card prompts (new - parent) above 0, or an A/B
    readout that ships. Only an improved, released generation is built upon (`training.generation_plan`)."""
    steer = gates.filter(pl.col("gate") == "steerability_regression") if "gate" in gates.columns else gates
    meta = (
        json.loads(steer["metadata"][0])
        if steer.height and "metadata" in steer.columns and steer["metadata"][0]
        else {}
    )
    new, parent = meta.get("following_rate"), meta.get("previous_following_rate")
    low, high = meta.get("ci_low"), meta.get("ci_high")
    following = {
        "new": new,
        "parent": parent,
        "difference": None if new is None or parent is None else new - parent,
        "ci_low": low,
        "ci_high": high,
    }
    by = []
    if low is not None and low > 0:
        by.append("held-out following")
    if ab is not None and ab.get("verdict") == "ship":
        by.append("A/B readout")
    improved = not blocked and bool(by)
    if blocked:
        reason = "blocked by its release gates"
    elif improved:
        reason = "better than its parent on " + " and ".join(by)
    else:
        interval = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else " (no interval)"
        reason = (
            "not shown better than its parent: held-out following "
            + (f"{following['difference']:+.3f}" if following["difference"] is not None else "unknown")
            + interval
            + f", A/B {ab.get('verdict') if ab else 'not read'}"
        )
    return {"improved": improved, "by": by, "reason": reason, "following": following}


def gate_verdicts(gates: pl.DataFrame) -> list[dict]:
    """Per gate of the `release_gates` table: severity, detail, its verdict (pass, fail, insufficient) and the
    evidence behind it (from the gate's metadata, when it recorded some)."""
    out = []
    for r in gates.iter_rows(named=True):
        meta = json.loads(r["metadata"]) if r.get("metadata") else {}
        out.append(
            {
                "gate": r["gate"],
                "severity": r["severity"],
                "outcome": evidence.outcome(r["severity"]),
                "detail": r["detail"],
                "evidence": meta.get("evidence"),
                # the steerability gate's per-rule violation rates, new and parent, with their paired intervals
                **({"rules": meta["rules"]} if meta.get("rules") else {}),
            }
        )
    return out
