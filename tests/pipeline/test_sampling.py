from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline import schema
from pipeline.prompts import cut_prompts
from pipeline.sampling import (
    MISSING_PROMPT_ID,
    NOT_SAMPLED,
    REPORT,
    SamplingConfig,
    sample_pool,
    sample_step,
)
from tests.pipeline.prompt_frames import DAY, prompts_frame


def shares(report: pl.DataFrame, dimension: str) -> dict[str, tuple[float | None, float]]:
    rows = report.filter(pl.col("dimension") == dimension)
    return {v: (t, a) for v, t, a in rows.select("value", "target_share", "achieved_share").iter_rows()}


def assert_conserved(inp: pl.DataFrame, pool: pl.DataFrame, drops: pl.DataFrame) -> None:
    assert pool.height + drops.height == inp.height
    assert sorted(pool["prompt_id"].to_list() + drops["row_id"].to_list()) == sorted(inp["prompt_id"].to_list())
    assert drops.schema == schema.DROPS
    assert set(drops["stage"]) <= {"sampling"}


def test_cluster_balanced_water_fills_equal_shares():
    frame = prompts_frame([500, 300, 100, 20, 5])
    pool, drops, report = sample_pool(frame, SamplingConfig(retain_fraction=0.3))
    n = round(0.3 * frame.height)
    assert pool.height == n == 278
    counts = dict(pool.group_by("cluster_id").len().iter_rows())
    # the two small clusters are kept whole; the other 253 are shared equally by the three large ones
    assert counts[3] == 20 and counts[4] == 5
    assert sorted(counts[c] for c in (0, 1, 2)) in ([84, 84, 85], [84, 85, 85])
    assert sum(counts[c] for c in (0, 1, 2)) == 253
    assert_conserved(frame, pool, drops)
    assert set(drops["reason_code"]) == {NOT_SAMPLED}
    detail = drops.join(frame, left_on="row_id", right_on="prompt_id").filter(pl.col("cluster_id") == 0)["detail"]
    assert detail.str.contains(r"^cell cluster_id=0 kept 8[45] of 500$").all()
    target, achieved = shares(report, "cluster_id")["4"]
    assert target == pytest.approx(0.2) and achieved == pytest.approx(5 / 278)
    assert report.select(REPORT.names()).schema == REPORT


def test_sample_weight_restores_cell_sizes():
    frame = prompts_frame([500, 300, 100, 20, 5])
    pool, _, _ = sample_pool(frame, SamplingConfig(retain_fraction=0.3))
    restored = dict(pool.group_by("cluster_id").agg(pl.col("sample_weight").sum()).iter_rows())
    sizes = dict(frame.group_by("cluster_id").len().iter_rows())
    assert restored == pytest.approx({k: float(v) for k, v in sizes.items()})


def test_stratified_source_shares_are_met():
    frame = prompts_frame([400, 400, 200])
    config = SamplingConfig(
        mode="stratified", retain_fraction=0.4, targets={"source": {"internal": 0.2, "external": 0.8}}
    )
    pool, drops, report = sample_pool(frame, config)
    assert pool.height == 400
    achieved = pool["source"].value_counts(normalize=True)
    got = dict(achieved.iter_rows())
    assert got["internal"] == pytest.approx(0.2, abs=1 / 400)
    assert shares(report, "source")["internal"] == (pytest.approx(0.2), pytest.approx(got["internal"]))
    assert_conserved(frame, pool, drops)


def test_stratified_two_dimensions_at_once():
    frame = prompts_frame([600, 300, 100], seed=2)
    targets = {"source": {"internal": 0.3, "external": 0.7}, "cluster_id": {"0": 0.34, "1": 0.33, "2": 0.33}}
    pool, drops, report = sample_pool(frame, SamplingConfig(mode="stratified", retain_fraction=0.25, targets=targets))
    assert pool.height == 250
    for dim, wanted in targets.items():
        got = shares(report, dim)
        for level, share in wanted.items():
            assert got[level][1] == pytest.approx(share, abs=0.01), (dim, level)
    assert_conserved(frame, pool, drops)


def test_partial_targets_give_the_rest_to_unlisted_levels_by_size():
    frame = prompts_frame([300], seed=4)
    config = SamplingConfig(mode="stratified", retain_fraction=0.5, targets={"character_id": {"max": 0.4}})
    pool, _, report = sample_pool(frame, config)
    got = shares(report, "character_id")
    sizes = dict(frame["character_id"].value_counts().iter_rows())
    bob_target = 0.6 * sizes["bob"] / (sizes["bob"] + sizes["ann"])
    assert got["bob"][0] == pytest.approx(bob_target)
    assert got["max"][1] == pytest.approx(0.4, abs=1 / pool.height)
    assert report.filter(pl.col("value") == "bob")["requested_share"][0] is None


def test_infeasible_targets_shrink_the_pool_or_fill_it():
    frame = prompts_frame([1000], internal_share=0.1, seed=5)
    n_internal = int((frame["source"] == "internal").sum())
    targets = {"source": {"internal": 0.5, "external": 0.5}}
    shrunk, drops, report = sample_pool(frame, SamplingConfig(mode="stratified", retain_fraction=0.6, targets=targets))
    assert shrunk.height <= 2 * n_internal + 1
    assert shrunk.height >= 2 * n_internal - 2
    assert dict(shrunk["source"].value_counts(normalize=True).iter_rows())["internal"] == pytest.approx(0.5, abs=0.01)
    pool_row = report.filter(pl.col("dimension") == "pool").row(0, named=True)
    assert pool_row["target_share"] == pytest.approx(0.6) and pool_row["achieved_share"] < 0.6
    assert_conserved(frame, shrunk, drops)

    filled, drops, _ = sample_pool(
        frame, SamplingConfig(mode="stratified", retain_fraction=0.6, targets=targets, on_shortfall="fill")
    )
    assert filled.height == 600
    assert int((filled["source"] == "internal").sum()) == n_internal
    assert_conserved(frame, filled, drops)


def test_absent_or_unwanted_levels_do_not_crash():
    frame = prompts_frame([200], internal_share=0.0)
    pool, drops, report = sample_pool(
        frame, SamplingConfig(mode="stratified", targets={"source": {"internal": 0.3, "external": 0.7}})
    )
    assert pool.height == 100  # the missing level is reported, the others are renormalised
    absent = report.filter((pl.col("dimension") == "source") & (pl.col("value") == "internal")).row(0, named=True)
    assert (absent["available"], absent["retained"], absent["requested_share"]) == (0, 0, 0.3)

    pool, drops, report = sample_pool(frame, SamplingConfig(mode="stratified", targets={"source": {"internal": 1.0}}))
    assert pool.height == 0 and drops.height == frame.height


def test_deterministic_order_free_and_seeded():
    frame = prompts_frame([300, 200, 50])
    config = SamplingConfig(retain_fraction=0.3, seed=7)
    a, _, _ = sample_pool(frame, config)
    b, _, _ = sample_pool(frame.sample(fraction=1.0, shuffle=True, seed=1), config)
    c, _, _ = sample_pool(frame, SamplingConfig(retain_fraction=0.3, seed=8))
    assert a.equals(sample_pool(frame, config)[0])
    assert set(a["prompt_id"]) == set(b["prompt_id"])
    assert set(a["prompt_id"]) != set(c["prompt_id"])
    # the pool keeps the input's order and columns
    assert a["prompt_id"].to_list() == sorted(a["prompt_id"].to_list())
    assert a.columns == [*frame.columns, "split", "sample_weight"]


def test_no_user_on_both_sides_and_eval_slices_follow_source():
    frame = prompts_frame([2000, 1000], n_users=2000, seed=9)
    pool, _, report = sample_pool(
        frame, SamplingConfig(retain_fraction=1.0, eval_fraction=0.2, internal_eval_fraction=0.2)
    )
    sides = pool.group_by("user_hash").agg((pl.col("split") == "train").n_unique().alias("sides"))
    assert sides["sides"].max() == 1
    held = pool.filter(pl.col("split") != "train")
    assert held.filter((pl.col("split") == "eval_internal") != (pl.col("source") == "internal")).height == 0
    users = pool.group_by("user_hash").agg((pl.col("split") != "train").first().alias("held"))
    assert users["held"].mean() == pytest.approx(0.2, abs=0.03)
    split_rows = report.filter(pl.col("dimension") == "split")
    assert split_rows["retained"].sum() == pool.height


def test_null_keys_do_not_crash_and_are_counted():
    frame = prompts_frame([50, 50]).with_columns(
        pl.when(pl.int_range(pl.len()) < 10).then(None).otherwise(pl.col("cluster_id")).alias("cluster_id"),
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("user_hash")).alias("user_hash"),
        pl.when(pl.int_range(pl.len()) == 99).then(None).otherwise(pl.col("prompt_id")).alias("prompt_id"),
    )
    pool, drops, report = sample_pool(frame, SamplingConfig(retain_fraction=0.5, eval_fraction=0.5))
    assert pool.height + drops.height == frame.height
    assert drops.filter(pl.col("reason_code") == MISSING_PROMPT_ID).height == 1
    assert "(null)" in report.filter(pl.col("dimension") == "cluster_id")["value"].to_list()
    assert (pool.filter(pl.col("user_hash").is_null())["split"] == "train").all()


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"mode": "random"}, "mode"),
        ({"retain_fraction": 0.0}, "retain_fraction"),
        ({"retain_fraction": 1.5}, "retain_fraction"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"max_pool_size": -1}, "max_pool_size"),
        ({"mode": "stratified"}, "targets"),
        ({"mode": "stratified", "targets": {"source": {"internal": 0.7, "external": 0.5}}}, "targets"),
        ({"mode": "stratified", "targets": {"source": {"internal": -0.1}}}, "targets"),
        ({"on_shortfall": "pad"}, "on_shortfall"),
        ({"targets": {"source": {"internal": 1.0}}}, "targets"),
    ],
)
def test_bad_config_names_the_setting(kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        SamplingConfig(**kwargs)


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="cluster_id"):
        sample_pool(prompts_frame([10]).drop("cluster_id"))


def test_max_pool_size_bounds_the_pool():
    pool, drops, _ = sample_pool(prompts_frame([100, 100]), SamplingConfig(retain_fraction=1.0, max_pool_size=30))
    assert pool.height == 30 and drops.height == 170


# ---------------------------------------------------------------- real data: BYU Chit-Chat


@pytest.fixture(scope="module")
def chitchat_prompts(shared_data: Path) -> pl.DataFrame:
    """Prompts of the first 1500 conversations; their opening topic stands in for a cluster."""
    raw = json.loads(gzip.decompress((shared_data / "chitchat_dataset.json.gz").read_bytes()))
    rows, topics = [], {}
    for cid, conv in list(raw.items())[:1500]:
        turns = conv.get("messages") or []
        if not turns or not turns[0]:
            continue
        topics[cid] = conv.get("prompt")
        user = turns[0][0]["sender"]
        msgs = [m for turn in turns for m in turn]
        rows += [(cid, k, "user" if m["sender"] == user else "assistant", m["text"], user) for k, m in enumerate(msgs)]
    conversations = pl.DataFrame(
        rows, schema=["conversation_id", "turn_index", "role", "text", "user_hash"], orient="row"
    )
    conversations = conversations.with_columns(
        pl.col("turn_index").cast(pl.Int32),
        # a fixed quarter of the users stand in for internal testers
        pl.when(pl.col("user_hash").str.slice(0, 1).is_in(["0", "1", "2", "3"]))
        .then(pl.lit("internal"))
        .otherwise(pl.lit("external"))
        .alias("source"),
        pl.lit(DAY).alias("day"),
    )
    prompts, _ = cut_prompts(conversations).frames
    topic = pl.DataFrame({"conversation_id": list(topics), "topic": list(topics.values())})
    return (
        prompts.join(topic, on="conversation_id", how="left")
        .with_columns(pl.col("topic").rank("dense").cast(pl.Int32).alias("cluster_id"))
        .drop("topic")
    )


def test_real_prompts_stratified_split_and_conservation(chitchat_prompts):
    frame = chitchat_prompts
    assert frame.height > 10_000
    config = SamplingConfig(
        mode="stratified",
        retain_fraction=0.3,
        eval_fraction=0.15,
        targets={"source": {"internal": 0.2, "external": 0.8}},
    )
    pool, drops, report = sample_pool(frame, config)
    assert_conserved(frame, pool, drops)
    internal = dict(pool["source"].value_counts(normalize=True).iter_rows())["internal"]
    assert internal == pytest.approx(0.2, abs=0.005)
    train_users = set(pool.filter(pl.col("split") == "train")["user_hash"])
    eval_users = set(pool.filter(pl.col("split") != "train")["user_hash"])
    assert train_users and eval_users and train_users.isdisjoint(eval_users)
    assert {"train", "eval_internal", "eval_user"} <= set(pool["split"])
    # the same users land on the same side when the pool is drawn differently
    other, _, _ = sample_pool(frame, SamplingConfig(retain_fraction=0.5, eval_fraction=0.15, seed=3))
    assert set(other.filter(pl.col("split") == "train")["user_hash"]).isdisjoint(eval_users)


def test_real_prompts_cluster_balanced_flattens_topics(chitchat_prompts):
    frame = chitchat_prompts
    pool, drops, report = sample_pool(frame, SamplingConfig(retain_fraction=0.3))
    assert_conserved(frame, pool, drops)
    before = frame["cluster_id"].value_counts()["count"]
    after = pool["cluster_id"].value_counts()["count"]
    # equal shares: the spread of topic sizes shrinks (small topics are kept whole)
    assert after.std() / after.mean() < 0.5 * before.std() / before.mean()


def test_sample_step_has_the_step_shape_with_typed_counters():
    frame = prompts_frame([300, 200, 100])
    step = sample_step(frame, SamplingConfig(retain_fraction=0.5))
    pool, drops, report = sample_pool(frame, SamplingConfig(retain_fraction=0.5))
    assert step.kept.equals(pool) and step.drops.equals(drops) and step.tables["sampling_report"].equals(report)
    c = step.counters
    assert (c.rows_in, c.rows_kept, c.rows_dropped) == (frame.height, pool.height, drops.height)
    assert c.train + c.eval_internal + c.eval_user == pool.height
    assert c.eval_user == pool.filter(pl.col("split") == "eval_user").height
