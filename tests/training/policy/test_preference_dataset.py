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
        prompts, c, PreferenceBuildConfig(max_length_delta=100, max_emoji_delta=2), annotation_pairs=ann
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
