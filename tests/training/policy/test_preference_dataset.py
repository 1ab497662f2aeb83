import numpy as np
import polars as pl
import pytest

from pipeline import schema
from tests.training.tiny_policy import cands, drop_reasons, prompts_frame
from training.policy.preference_dataset import PREFERENCE_PAIRS, PreferenceBuildConfig, build_preference_dataset

# ---- preferences -------------------------------------------------------------------------------------------------


def test_preference_pairs_best_vs_worst_with_artifact_filters():
    prompts = prompts_frame(5)
    c = cands(
        [
            ("p0", 0, "a warm, kind answer", 0.9),
            ("p0", 1, "ok", 0.2),
            ("p0", 2, "fine answer", 0.5),
            ("p1", 0, "x" * 300, 0.9),
            ("p1", 1, "short", 0.1),
            ("p2", 0, "yay 🎉🎉🎉", 0.9),
            ("p2", 1, "yay", 0.1),
            ("p3", 0, "same score", 0.5),
            ("p3", 1, "same again", 0.5),
            ("p4", 0, "only one", 0.5),
        ]
    )
    ann = pl.DataFrame(
        {
            "pair_id": ["h1", "h2"],
            "prompt": [[{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "x"}]],
            "chosen": ["hello there!", "a"],
            "rejected": ["go away", "b"],
            "source": ["human", "human"],
            "margin": [None, None],
        },
        schema_overrides={"margin": pl.Float64, "prompt": pl.List(schema.MESSAGE)},
    )
    res = build_preference_dataset(
        prompts,
        c,
        PreferenceBuildConfig(max_length_delta=100, max_emoji_delta=2, max_length_ratio=1000.0, length_balance=None),
        annotation_pairs=ann,
    )
    assert res.frame.schema == PREFERENCE_PAIRS
    reasons = dict(zip(res.frame["pair_id"], res.frame["drop_reason"]))
    assert reasons == {
        "p0/pair": None,
        "p1/pair": "length_delta",
        "p2/pair": "emoji_delta",
        "p3/pair": "low_margin",
        "h1": None,
        "h2": "bad_prompt",
    }
    assert drop_reasons(res)["p4/pair"] == "too_few_candidates"
    row = res.frame.filter(pl.col("pair_id") == "p1/pair").row(0, named=True)
    assert row["delta_len"] == 295 and row["margin"] == pytest.approx(0.8)
    assert res.dataset.column_names == ["prompt", "chosen", "rejected", "pair_id", "source"]
    first = res.dataset[0]
    assert first["chosen"] == [{"role": "assistant", "content": "a warm, kind answer"}]
    assert first["rejected"] == [{"role": "assistant", "content": "ok"}]
    assert first["prompt"][-1]["role"] == "user"
    assert res.manifest["rows_by_source"] == {"candidates": 1, "human": 1}
    assert res.manifest["drops_by_reason"]["preference_data/length_delta"] == 1


def test_preference_config_validation():
    with pytest.raises(ValueError, match="min_margin"):
        PreferenceBuildConfig(min_margin=-1)


def test_the_rejected_reply_is_the_worst_of_about_the_chosen_ones_length():
    prompts = prompts_frame(2)
    c = cands(
        [
            ("p0", 0, "a warm and kind answer", 0.9),
            ("p0", 1, "ok", 0.1),  # the worst overall, but a tenth of the chosen one's length
            ("p0", 2, "a so-so kind answer", 0.4),
            ("p0", 3, "a rather good answer!", 0.6),
            ("p1", 0, "a long and very detailed answer", 0.9),
            ("p1", 1, "no", 0.2),
        ]
    )
    res = build_preference_dataset(prompts, c, PreferenceBuildConfig(length_balance=None))
    pair = res.frame.filter(pl.col("pair_id") == "p0/pair").row(0, named=True)
    assert (pair["chosen"], pair["rejected"]) == ("a warm and kind answer", "a so-so kind answer")
    assert drop_reasons(res)["p1/pair"] == "length_unmatched"
    assert res.manifest["drops_by_reason"]["preference_data/length_unmatched"] == 1
    with pytest.raises(ValueError, match="max_length_ratio"):
        PreferenceBuildConfig(max_length_ratio=0.5)


def test_a_reply_cut_off_at_the_token_limit_is_never_the_chosen_one():
    prompts = prompts_frame(2)
    c = cands(
        [
            ("p0", 0, "a warm and kind answer that ran", 0.9),  # the best scored, but cut off
            ("p0", 1, "a rather good answer!", 0.6),
            ("p0", 2, "a so-so kind answer", 0.4),
            ("p1", 0, "a long answer that ran into", 0.9),
            ("p1", 1, "another that ran into the", 0.5),
        ]
    ).with_columns(ended=pl.Series([False, True, True, False, False]))
    res = build_preference_dataset(prompts, c, PreferenceBuildConfig(length_balance=None, length_neutral=False))
    pair = res.frame.filter(pl.col("pair_id") == "p0/pair").row(0, named=True)
    assert (pair["chosen"], pair["rejected"]) == ("a rather good answer!", "a so-so kind answer")
    assert drop_reasons(res)["p1/pair"] == "cut_off"


def test_the_balance_leaves_out_the_pairs_that_would_teach_shorter_replies():
    prompts = prompts_frame(20)
    rows = []
    for i in range(20):
        # 14 prompts whose best reply is the shorter one, 6 whose best is the longer one
        short, long_ = f"reply {i} " + "a" * 20, f"reply {i} " + "a" * 30
        best, worst = (short, long_) if i < 14 else (long_, short)
        rows += [(f"p{i}", 0, best, 0.9), (f"p{i}", 1, worst, 0.1)]
    res = build_preference_dataset(prompts, cands(rows), PreferenceBuildConfig(length_balance=0.05))
    ratio = res.manifest["length_shift_by_source"]["candidates"]
    assert ratio["before"] < -0.1 and abs(ratio["after"]) <= 0.05
    left_out = {r for r, why in drop_reasons(res).items() if why == "length_balance"}
    assert len(left_out) == ratio["left_out"] == 6  # 8 shorter-chosen and 6 longer-chosen pairs remain
    assert left_out <= {f"p{i}/pair" for i in range(14)}  # only pairs whose chosen reply is the shorter
    kept = [np.log1p(len(r["chosen"][0]["content"])) - np.log1p(len(r["rejected"][0]["content"])) for r in res.dataset]
    assert abs(np.mean(kept)) <= 0.05 and len(kept) == 14
    unbalanced = build_preference_dataset(prompts, cands(rows), PreferenceBuildConfig(length_balance=None))
    assert (
        len(unbalanced.dataset) == 20 and "preference_data/length_balance" not in unbalanced.manifest["drops_by_reason"]
    )
    with pytest.raises(ValueError, match="length_balance"):
        PreferenceBuildConfig(length_balance=-0.1)
