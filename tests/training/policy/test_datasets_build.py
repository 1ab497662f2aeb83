import numpy as np
import polars as pl
import pytest

from tests.training.tiny_policy import cands, drop_reasons, prompts_frame
from training.policy.datasets_build import privacy_pii_check
from training.policy.preference_dataset import PreferenceBuildConfig, build_preference_dataset
from training.policy.sft_dataset import SFTBuildConfig, build_sft_dataset


def test_privacy_pii_check_plugs_into_the_builders():
    check = privacy_pii_check()
    if check is None:
        pytest.skip("pipeline.privacy is not available")
    assert check("mail me at bob@example.com") and not check("hello there, how are you?")
    prompts = prompts_frame(1)
    res = build_sft_dataset(
        prompts,
        cands([("p0", 0, "write to bob@example.com", 0.9), ("p0", 1, "sure!", 0.5)]),
        SFTBuildConfig(min_score=0.0, mix={"rejection_sampled": 1.0}),
        pii_check=check,
    )
    assert drop_reasons(res)["p0/gen1/0"] == "pii" and res.dataset[0]["messages"][-1]["content"] == "sure!"


# ---- the reward model's length preference ------------------------------------------------------------------------


def _short_loving_candidates(n_prompts: int = 30) -> pl.DataFrame:
    """Four replies per prompt of 12, 24, 48 and 96 characters, scored by a reward that mostly pays for brevity
    (minus log-length) plus a content term that is highest for the 48-character reply."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(n_prompts):
        for k, n in enumerate((12, 24, 48, 96)):
            content = 1.0 if n == 48 else 0.0
            text = "a" * (n - 1) + "."
            rows.append((f"p{p}", k, text, -float(np.log1p(len(text))) + content + rng.normal(0, 0.05)))
    return cands(rows)


def test_rejection_sampling_does_not_learn_the_reward_models_length_preference():
    prompts, c = prompts_frame(30), _short_loving_candidates()
    mix = {"rejection_sampled": 1.0}
    neutral = build_sft_dataset(prompts, c, SFTBuildConfig(min_score=-100.0, mix=mix))
    raw = build_sft_dataset(prompts, c, SFTBuildConfig(min_score=-100.0, mix=mix, length_neutral=False))

    def kept_lengths(res) -> list[int]:
        return [len(r["messages"][-1]["content"]) for r in res.dataset]

    assert set(kept_lengths(raw)) == {12}  # brevity wins every prompt on the raw score
    assert set(kept_lengths(neutral)) == {48}  # the content term wins once the length trend is out
    trend = neutral.manifest["length_trend"]
    assert trend["slope"] == pytest.approx(-1.0, abs=0.25) and trend["prompts"] == 30
    assert raw.manifest["length_trend"] is None


def test_the_length_trend_is_fitted_and_taken_out_per_kind_of_prompt():
    from training.policy.datasets_build import without_length_trend

    # traffic replies scored with no length trend at all, card replies whose score falls steeply with length
    traffic = _short_loving_candidates(30).with_columns(
        rm_pointwise=pl.when(pl.col("n_chars").is_in([24, 48])).then(1.0).otherwise(0.0)
    )
    cards = _short_loving_candidates(30).with_columns(pl.col("prompt_id").str.replace("p", "steer:c"))
    c = pl.concat([traffic, cards])
    card_ids = cards["prompt_id"].unique().to_list()
    adjusted, trend = without_length_trend(c, True, card_ids)
    assert trend["slope"] == pytest.approx(0.0, abs=0.05) and trend["prompts"] == 30
    assert trend["cards"]["slope"] == pytest.approx(-1.0, abs=0.25) and trend["cards"]["prompts"] == 30
    # the traffic scores are left as they were, in their order: a pooled trend would have favoured long replies
    assert adjusted["prompt_id"].to_list() == c["prompt_id"].to_list()
    np.testing.assert_allclose(adjusted.head(traffic.height)["rm_pointwise"], traffic["rm_pointwise"], atol=0.2)
    best = adjusted.sort("rm_pointwise", descending=True).group_by("prompt_id").first()
    assert set(best["n_chars"]) <= {24, 48}
    _, pooled = without_length_trend(c, True)
    assert pooled["slope"] < -0.3  # what one fit over both kinds would have taken out of the traffic scores


def test_preference_pairs_are_chosen_without_the_length_trend():
    prompts, c = prompts_frame(30), _short_loving_candidates()
    # which reply is chosen is under test, not the length pairing or balance that follow it
    free = {"max_length_ratio": 1000.0, "length_balance": None}
    neutral = build_preference_dataset(prompts, c, PreferenceBuildConfig(**free))
    raw = build_preference_dataset(prompts, c, PreferenceBuildConfig(length_neutral=False, **free))

    def chosen_lengths(res) -> set[int]:
        return {len(r["chosen"][0]["content"]) for r in res.dataset}

    assert chosen_lengths(raw) == {12} and chosen_lengths(neutral) == {48}
    assert neutral.manifest["length_trend"]["slope"] < 0
    # the lineage hashes the reward model's own scores, whichever ranking was used
    assert neutral.manifest["parents"]["candidates"] == raw.manifest["parents"]["candidates"]
