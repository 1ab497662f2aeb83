"""The release gates' settings (their limits and the evidence minima) and the result each gate returns.

Severity is "ok", "warn", "insufficient" or "error"; only "error" fails a gate (`evaluation.release_gates`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

SEVERITIES = ("ok", "warn", "insufficient", "error")


def _default_bands() -> dict[str, tuple[str, float]]:
    return {
        "mean_chars": ("relative", 0.20),
        "mean_words": ("relative", 0.20),
        # replies that ramble into the token limit: only a rise counts (learning to end a reply is no drift)
        "cut_off_rate": ("rise", 0.10),
        "list_rate": ("absolute", 0.10),
        "emoji_rate": ("absolute", 0.05),
        "mean_emoji": ("absolute", 0.10),
        "stock_phrase_rate": ("absolute", 0.03),
        "refusal_rate": ("absolute", 0.02),
    }


@dataclass
class GateConfig:
    win_rate_error: float = field(default=0.65, metadata={"help": "A slice win rate above this fails the release."})
    win_rate_warn: float = field(default=0.60, metadata={"help": "A slice win rate above this warns."})
    slices: tuple[str, ...] = field(
        default=("eval_internal", "eval_user"), metadata={"help": "Slices the win-rate gates read."}
    )
    slice_divergence_max: float = field(
        default=0.10, metadata={"help": "Largest allowed |eval_user - eval_internal| win-rate gap per judge."}
    )
    slice_divergence_z: float = field(
        default=1.96,
        metadata={
            "help": "A gap beyond `slice_divergence_max` fails only when it is also this many standard errors from 0 "
            "(each slice's error read off its win-rate interval): a slice of a few dozen prompts swings by more than "
            "the limit by chance, and then warns instead. 0 fails on the gap alone."
        },
    )
    steerability_tolerance: float = field(
        default=0.02,
        metadata={
            "help": "Largest allowed drop of the instruction-following rate, and rise of a rule's violation rate; "
            "beyond it the gate fails when the paired interval over the card prompts excludes no change, else warns."
        },
    )
    artifact_bands: dict[str, tuple[str, float]] = field(
        default_factory=_default_bands,
        metadata={
            "help": "Style metric -> ('relative' | 'absolute' | 'rise', allowed drift from the previous generation; "
            "'rise' bounds an increase only)."
        },
    )
    artifact_warn_fraction: float = field(default=0.8, metadata={"help": "Drift beyond this fraction of a band warns."})
    min_artifact_replies: int = field(
        default=30,
        metadata={
            "help": "Fewest held-out replies from each policy for the artifact-drift gate to decide (fewer: "
            "insufficient evidence): over a handful of replies a single stock phrase or emoji is a rate far "
            "outside any band."
        },
    )
    fluency_margin: float = field(
        default=0.1,
        metadata={
            "help": "The fluency gate fails when the new generation's mean SLOR (nats per token, "
            "`evaluation.fluency`) is below the parent's with the whole paired interval below -this margin. "
            "0.1 is a drop of a tenth in the reference model's per-token likelihood ratio, a thirtieth of the gap "
            "between human replies and the same words shuffled (2.95 nats/token, bench/bench_fluency.py): "
            "small enough to catch a slide toward word salad, large enough that a change of wording is not one."
        },
    )
    min_fluency_replies: int = field(
        default=20,
        metadata={
            "help": "Fewest eval prompts with both replies scored for the fluency gate to decide (fewer: "
            "insufficient evidence)."
        },
    )
    ifeval_margin: float = field(
        default=0.0,
        metadata={
            "help": "The IFEval gate fails when instruction-strict or prompt-strict accuracy on the held-out IFEval "
            "prompts is below the parent's with the whole paired interval below -this margin: 0 blocks any drop "
            "the evidence decides; a drop whose interval reaches 0 warns."
        },
    )
    min_ifeval_prompts: int = field(
        default=30,
        metadata={
            "help": "Fewest held-out IFEval prompts scored for both policies for the IFEval gate to decide (fewer: "
            "insufficient evidence)."
        },
    )
    max_train_eval_overlap: int = field(
        default=0, metadata={"help": "Eval prompts allowed to also be training prompts (0: disjoint)."}
    )
    min_slice_users: int = field(
        default=20,
        metadata={
            "help": "A slice with fewer held-out users gives the win-rate gates insufficient evidence (a win rate "
            "over a handful of people is about those people)."
        },
    )
    judge_margin: float = field(
        default=0.02,
        metadata={
            "help": "A judge counts only when its held-out AUC (pointwise; within turn-position strata when "
            "measured) or pair accuracy (pairwise) beats the length-only baseline's by this much."
        },
    )
    min_judge_heldout: int = field(
        default=50, metadata={"help": "Fewest held-out rows (pairs) behind a judge's validation for it to count."}
    )
    min_decided_gates: int = field(
        default=3,
        metadata={
            "help": "The release rule: a generation is released only when no gate failed and at least this many "
            "gates had the evidence to decide. 3 of 6 by default: the steerability, artifact and train/eval gates "
            "rest on fixed suites and the replies themselves, so they always decide, while the two win-rate gates "
            "depend on held-out users and on judges that the traffic may not support, and the fluency gate on its "
            "reference model being installed; a release never rests on missing evidence alone."
        },
    )

    def __post_init__(self) -> None:
        self.slices = tuple(self.slices)
        if not 0.5 <= self.win_rate_warn <= self.win_rate_error <= 1:
            raise ValueError("need 0.5 <= win_rate_warn <= win_rate_error <= 1 (defaults 0.60 and 0.65)")
        if len(self.slices) != 2:
            raise ValueError("slices must name exactly two slices (the divergence gate compares them)")
        if self.slice_divergence_z < 0:
            raise ValueError(f"slice_divergence_z={self.slice_divergence_z} must be >= 0 (1.96: a 95% two-sided test)")
        for name in ("slice_divergence_max", "steerability_tolerance"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        for metric, band in self.artifact_bands.items():
            if len(band) != 2 or band[0] not in ("relative", "absolute", "rise") or band[1] < 0:
                raise ValueError(
                    f"artifact_bands[{metric!r}]={band!r}: use ('relative' | 'absolute' | 'rise', width >= 0)"
                )
        if not 0 < self.artifact_warn_fraction <= 1:
            raise ValueError("artifact_warn_fraction must be in (0, 1]")
        if self.min_artifact_replies < 1:
            raise ValueError(f"min_artifact_replies={self.min_artifact_replies} must be >= 1 (default 30)")
        if self.fluency_margin < 0 or self.min_fluency_replies < 1:
            raise ValueError("fluency_margin must be >= 0 (default 0.1) and min_fluency_replies >= 1 (default 20)")
        if not 0 <= self.ifeval_margin < 1 or self.min_ifeval_prompts < 1:
            raise ValueError("ifeval_margin must be in [0, 1) (default 0) and min_ifeval_prompts >= 1 (default 30)")
        if self.max_train_eval_overlap < 0:
            raise ValueError("max_train_eval_overlap must be >= 0")
        if self.min_slice_users < 1 or self.min_judge_heldout < 1 or self.min_decided_gates < 0:
            raise ValueError("min_slice_users and min_judge_heldout must be >= 1, min_decided_gates >= 0")
        if not 0 <= self.judge_margin < 0.5:
            raise ValueError(f"judge_margin={self.judge_margin} must be in [0, 0.5), e.g. 0.02")


class GateResult(NamedTuple):
    passed: bool
    severity: str
    detail: str
    metadata: dict[str, Any]


def gate_result(gate: str, severity: str, detail: str, **metadata: Any) -> GateResult:
    return GateResult(severity in ("ok", "warn"), severity, detail, {"gate": gate, **metadata})


def worst_severity(levels: list[str]) -> str:
    return max(levels, key=SEVERITIES.index, default="ok")
