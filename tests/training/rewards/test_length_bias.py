import numpy as np
import polars as pl
import pytest

from training.rewards.length_bias import (
    MIN_ROWS,
    balance_shifts,
    balanced_order,
    fit_length_trend,
    length_adjusted,
    relative_difference,
    relative_shifts,
    remove_length_trend,
)


def candidates(slope: float, n_prompts: int = 60, per_prompt: int = 4, seed: int = 0) -> pl.DataFrame:
    """Replies whose score is a content term plus `slope` per log-character; prompts differ in typical length
    and in base score, so only a within-prompt fit sees the true slope."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        typical = rng.integers(10, 200)
        base = 0.01 * typical  # prompts that draw long replies also score high: not a length effect
        for _ in range(per_prompt):
            n = max(1, int(typical * rng.uniform(0.3, 2.0)))
            quality = rng.normal()
            score = base + quality + slope * np.log1p(n) + rng.normal(0, 0.05)
            rows.append({"prompt_id": f"p{p}", "text": "x" * n, "rm_pointwise": score, "quality": quality})
    return pl.DataFrame(rows)


@pytest.mark.parametrize("slope", [-0.8, 0.0, 0.5])
def test_the_within_prompt_slope_is_recovered_whatever_the_prompts_typical_length(slope):
    frame = candidates(slope, n_prompts=200)
    trend = fit_length_trend(frame)
    assert trend.slope == pytest.approx(slope, abs=0.1)
    assert trend.rows == frame.height and trend.prompts == 200
    assert 0.0 <= trend.r2 <= 1.0
    # a pooled fit would also count the prompts' length/score link as length
    pooled = np.polyfit(np.log1p(frame["text"].str.len_chars().to_numpy()), frame["rm_pointwise"].to_numpy(), 1)[0]
    assert abs(pooled - slope) > abs(trend.slope - slope)


def test_removing_the_trend_leaves_the_content_ranking():
    frame = candidates(-0.8, seed=3)
    trend = fit_length_trend(frame)
    fixed = remove_length_trend(frame, trend.slope, out="adjusted")
    within = fixed.with_columns(
        (pl.col(c) - pl.col(c).mean().over("prompt_id")).alias(c) for c in ("adjusted", "quality", "rm_pointwise")
    ).with_columns((pl.col("text").str.len_chars().cast(pl.Float64) + 1).log().alias("loglen"))
    within = within.with_columns(pl.col("loglen") - pl.col("loglen").mean().over("prompt_id"))
    assert abs(within.select(pl.corr("adjusted", "loglen")).item()) < 0.05
    assert within.select(pl.corr("rm_pointwise", "loglen")).item() < -0.3
    assert within.select(pl.corr("adjusted", "quality")).item() > 0.95
    # the best reply per prompt is no longer the shortest one
    relative = fixed.with_columns(
        (pl.col("text").str.len_chars() / pl.col("text").str.len_chars().mean().over("prompt_id")).alias("rel")
    )

    def best_length(score: str) -> float:
        return relative.sort(score, descending=True).group_by("prompt_id").first()["rel"].mean()

    assert best_length("rm_pointwise") < 0.9
    assert best_length("adjusted") == pytest.approx(1.0, abs=0.15)
    # the array form for online rewards gives the same numbers
    arr = length_adjusted(frame["rm_pointwise"].to_numpy(), frame["text"].to_list(), trend.slope)
    np.testing.assert_allclose(arr, fixed["adjusted"].to_numpy())


def test_too_few_comparable_rows_fit_no_trend_and_change_nothing():
    lone = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(50)], "text": ["a" * i for i in range(50)]})
    lone = lone.with_columns(rm_pointwise=pl.col("text").str.len_chars().cast(pl.Float64))
    trend = fit_length_trend(lone)  # one candidate per prompt: nothing to compare within a prompt
    assert (trend.slope, trend.rows) == (0.0, 0)
    assert remove_length_trend(lone, trend.slope).equals(lone)
    few = candidates(-1.0, n_prompts=MIN_ROWS // 4 - 1)
    assert fit_length_trend(few).slope == 0.0
    nulls = candidates(-1.0).with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(None).otherwise(pl.col("rm_pointwise")).alias("rm_pointwise")
    )
    assert fit_length_trend(nulls).slope == pytest.approx(-1.0, abs=0.2)
    assert fit_length_trend(nulls.head(0)).slope == 0.0


def test_the_balance_leaves_out_the_most_extreme_rows_on_the_side_the_mean_leans_to():
    shifts = [-0.6, -0.5, -0.4, 0.1, 0.0, 0.05, -0.05, 0.2]  # mean -0.15
    out = balance_shifts(shifts, 0.05)
    assert out == {0, 1}  # after them the mean is -0.017
    kept = [v for i, v in enumerate(shifts) if i not in out]
    assert abs(np.mean(kept)) <= 0.05
    # the same rows mirrored lean the other way and lose their mirror images
    assert balance_shifts([-v for v in shifts], 0.05) == {0, 1}


def test_a_balanced_or_empty_set_keeps_everything_and_a_bad_tolerance_fails():
    assert balance_shifts([], 0.05) == set()
    assert balance_shifts([0.3, -0.3, 0.01], 0.05) == set()
    with pytest.raises(ValueError, match="tolerance"):
        balance_shifts([0.1], -1.0)
    with pytest.raises(ValueError, match="max_left_out"):
        balance_shifts([0.1], 0.05, max_left_out=1.0)


def test_the_balance_never_takes_more_than_its_share_of_rows():
    shifts = [-0.5] * 9 + [0.1]  # nearly every row shorter: no subset reaches the tolerance
    out = balance_shifts(shifts, 0.05)
    assert len(out) == 5 and 9 not in out  # half the rows at most, never the longer one
    assert balance_shifts([-0.5, -0.4], 0.05) == {0}  # at least one row stays


def test_relative_shifts_average_to_the_relative_difference_of_the_means():
    lengths, refs = [10.0, 50.0, 30.0], [20.0, 40.0, 30.0]
    shifts = relative_shifts(lengths, refs)
    assert shifts == pytest.approx([-10 / 30, 10 / 30, 0.0])
    assert np.mean(shifts) == pytest.approx(relative_difference(lengths, refs)) == pytest.approx(0.0)
    # one long reply weighs as much as it adds to the mean length, which is what the artifact gate compares
    assert relative_difference([10.0, 10.0, 100.0], [40.0, 40.0, 40.0]) == pytest.approx(0.0)
    assert relative_shifts([], []) == [] and relative_difference([], []) is None
    with pytest.raises(ValueError, match="references"):
        relative_shifts([1.0], [])


def test_a_balanced_order_keeps_every_prefix_near_zero_and_the_best_rows_first():
    shifts = [-0.5, -0.5, -0.5, 0.4, 0.5, 0.0]  # best first
    order = balanced_order(shifts, 0.05)
    assert order == [3, 0, 4, 1, 2, 5]
    assert abs(np.mean([shifts[i] for i in order[:4]])) <= 0.05  # the first four: two of each side
    assert sorted(order) == list(range(6))
    assert balanced_order(shifts, 10.0) == list(range(6))  # nothing leans too far: rank order
    assert balanced_order([], 0.05) == []


def test_a_balanced_order_spreads_a_few_long_rows_among_many_short_ones():
    shifts = [-0.3, -0.3, -0.3, 1.5, 1.5, -0.3, -0.3, -0.3, -0.3, -0.3]  # mean 0.06: long replies are rare
    order = balanced_order(shifts, 0.05)
    means = [np.mean([shifts[i] for i in order[:k]]) for k in range(1, len(order) + 1)]
    # one long row comes in as soon as it helps, and the second not right after it
    assert order[:4] == [0, 1, 2, 3] and order.index(4) > 5
    assert max(abs(m) for m in means[3:]) <= 0.15 + 1e-9 and means[-1] == pytest.approx(0.06)
