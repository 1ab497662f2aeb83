"""What the training-set builders of one generation share: the PII guard, the character-card rule check, the
prompt index and the length trend taken out of the scores.

Each builder takes polars frames (prompts per schema.PROMPTS, candidates per `training.policy.candidates.CANDIDATES`)
and returns a `BuildResult`: the kept rows as a `datasets.Dataset` in TRL's conversational format, a DROPS
frame naming why every other row went, and a manifest (counts, ratios, content hash, parents) for lineage.
The builders are `training.policy.sft_dataset` (the SFT mixture), `training.policy.preference_dataset` (the
preference pairs) and `training.policy.rl_pool` (the RL prompt pool); on a character card's prompt
(`training.policy.steer_data`) a candidate is a target only when it keeps every rule of the card.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import polars as pl

from engine.style import StyleGuards
from training.policy.models import chat_messages
from training.policy.steer_data import check_candidates
from training.rewards.length_bias import fit_length_trend, log_chars

PiiCheck = Callable[[str], bool]  # True when the text holds personal data


def privacy_pii_check() -> PiiCheck | None:
    """`pipeline.privacy`'s detectors as a pii_check (True when any PII type is found); None if unavailable."""
    try:
        from pipeline.privacy import scrub_text_with_types
        from pipeline.privacy_config import PrivacyConfig
    except ImportError:
        return None
    config = PrivacyConfig()
    return lambda text: bool(scrub_text_with_types(text or "", config)[1])


def check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value} must be in [0, 1]; set `{name}` to a fraction")


def check_length_balance(value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"length_balance={value} must be >= 0, or None to keep every row")


def style_guards(value: StyleGuards | dict) -> StyleGuards:
    return StyleGuards(**value) if isinstance(value, dict) else value


def rule_checked(prompts: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Candidates with `rules_kept`, computed here when character-card prompts are among `prompts` and the
    candidates were not checked yet."""
    if "instructions" in prompts.columns and "rules_kept" not in candidates.columns:
        return check_candidates(candidates, prompts)
    return candidates


def prompt_index(prompts: pl.DataFrame) -> dict[str, dict]:
    return {r["prompt_id"]: r for r in prompts.iter_rows(named=True)}


def prompt_context(prompt: dict) -> list[dict]:
    return chat_messages(prompt["system"], prompt["history"])


def without_length_trend(
    candidates: pl.DataFrame, enabled: bool, card_ids: Collection[str] = ()
) -> tuple[pl.DataFrame, dict | None]:
    """Candidates whose `rm_pointwise` has the within-prompt length trend taken out, and that trend.

    The trend is fitted, and taken out, per kind of prompt: on the traffic prompts (the manifest's `slope`) and on
    the character-card prompts in `card_ids` (its `cards`). A card's rules bound a reply's length and the reward
    model scores rule-keeping replies its own way, so a trend pooled over both kinds is the card prompts' more than
    the traffic's: fitted on one window's candidates together it came out 2.6 times the traffic prompts' own, and
    taken out of the traffic scores it made the best-of-n keep replies 39% shorter than the policy's."""
    if not enabled or "rm_pointwise" not in candidates.columns:
        return candidates, None
    is_card = pl.col("prompt_id").is_in(list(card_ids))
    trend, card_trend = fit_length_trend(candidates.filter(~is_card)), fit_length_trend(candidates.filter(is_card))
    slope = pl.when(is_card).then(pl.lit(card_trend.slope)).otherwise(pl.lit(trend.slope))
    adjusted = candidates.with_columns(pl.col("rm_pointwise").cast(pl.Float64) - slope * log_chars("text"))
    return adjusted, {**trend.as_dict(), "cards": card_trend.as_dict()}
