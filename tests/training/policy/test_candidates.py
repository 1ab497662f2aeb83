import numpy as np
import polars as pl
import pytest

from engine.policy import PolicyConfig
from engine.sampling import CandidateConfig
from engine.style import count_emoji
from pipeline import schema
from tests.training.tiny_policy import length_scorer, one_cpu_thread, prompts_frame, tiny_policy_dir  # noqa: F401
from training.policy.candidates import (
    CANDIDATES,
    generate_candidates,
    generator_pool,
)

CFG = CandidateConfig(num_samples=2, max_new_tokens=12, batch_size=2, device="cpu", seed=1)


def _bad_prompts() -> pl.DataFrame:
    base = prompts_frame(2)
    return pl.concat(
        [
            base.head(1).with_columns(prompt_id=pl.lit("empty"), history=pl.lit([], dtype=pl.List(schema.MESSAGE))),
            base.head(1).with_columns(
                prompt_id=pl.lit("ends_with_bot"),
                history=pl.lit(
                    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                    dtype=pl.List(schema.MESSAGE),
                ),
            ),
        ]
    )


def test_candidates_three_prompts_two_samples_scored_and_described():
    prompts = pl.concat([prompts_frame(3), _bad_prompts()])
    continue_fn = lambda ctx, resp: np.full(len(resp), 0.25)  # noqa: E731
    res = generate_candidates(prompts, [tiny_policy_dir()], length_scorer, continue_fn, CFG)
    frame = res.frame
    assert frame.schema == CANDIDATES
    assert frame.height == 3 * 2
    assert sorted(frame["prompt_id"].unique().to_list()) == ["p0", "p1", "p2"]
    assert frame.group_by("prompt_id").len()["len"].to_list() == [2, 2, 2]
    assert set(frame["generator"]) == {"policy"} and set(frame["sample_idx"]) == {0, 1}
    expected = length_scorer([[{"role": "user", "content": "x"}]] * frame.height, frame["text"].to_list())
    np.testing.assert_allclose(frame["rm_pointwise"].to_numpy(), expected)
    assert frame["p_continue"].to_list() == [0.25] * 6
    assert frame["n_chars"].to_list() == [len(t) for t in frame["text"]]
    assert frame["n_emoji"].to_list() == [count_emoji(t) for t in frame["text"]]
    assert (frame["n_tokens"] >= 1).all() and (frame["n_tokens"] <= CFG.max_new_tokens).all()
    # bad prompts are reported, not sampled
    assert dict(zip(res.drops["row_id"], res.drops["reason_code"])) == {
        "empty": "empty_history",
        "ends_with_bot": "not_ending_in_user",
    }
    assert res.drops.schema == schema.DROPS
    stats = res.stats["generators"]["policy"]
    assert stats["samples"] == 6 and stats["gen_tokens"] == frame["n_tokens"].sum() and stats["tokens_per_s"] > 0


def test_candidates_from_a_pool_are_named_and_reproducible():
    pool = {"gen1": tiny_policy_dir(), "gen0": PolicyConfig(model_name_or_path=tiny_policy_dir(), device="cpu")}
    first = generate_candidates(prompts_frame(2), pool, length_scorer, cfg=CFG).frame
    again = generate_candidates(prompts_frame(2), pool, length_scorer, cfg=CFG).frame
    assert set(first["generator"]) == {"gen0", "gen1"} and first.height == 2 * 2 * 2
    assert first["p_continue"].null_count() == first.height
    assert first.equals(again)


def test_nonfinite_scores_become_null_and_wrong_lengths_fail():
    nan_scorer = lambda ctx, resp: np.full(len(resp), np.nan)  # noqa: E731
    frame = generate_candidates(prompts_frame(1), [tiny_policy_dir()], nan_scorer, cfg=CFG).frame
    assert frame["rm_pointwise"].null_count() == frame.height
    with pytest.raises(ValueError, match="score_fn returned 1 scores"):
        generate_candidates(prompts_frame(1), [tiny_policy_dir()], lambda c, r: np.zeros(1), cfg=CFG)


def test_generators_need_distinct_names():
    with pytest.raises(ValueError, match="both named"):
        generator_pool(["a/policy", "b/policy"])


def test_no_valid_prompt_gives_an_empty_frame_and_the_drops():
    res = generate_candidates(_bad_prompts(), [tiny_policy_dir()], length_scorer, cfg=CFG)
    assert res.frame.is_empty() and res.frame.schema == CANDIDATES and res.drops.height == 2
