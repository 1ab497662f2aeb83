import dataclasses
import json

import datasets
import polars as pl
import pytest

from engine.style import StyleGuards
from pipeline import schema
from tests.training.tiny_policy import cands, drop_reasons, prompts_frame
from training.policy.sft_dataset import SFTBuildConfig, build_sft_dataset

# ---- SFT ---------------------------------------------------------------------------------------------------------


def test_sft_rejection_sampling_keeps_best_passing_candidate_and_counts_drops():
    prompts = prompts_frame(4).with_columns(continued=pl.lit(False))
    prompts = prompts.with_columns(
        split=pl.when(pl.col("prompt_id") == "p3").then(pl.lit("eval_user")).otherwise(pl.col("split"))
    )
    c = cands(
        [
            ("p0", 0, "the best reply here", 0.9),
            ("p0", 1, "a fine reply", 0.5),
            ("p0", 2, "weak", 0.1),
            ("p1", 0, "party time 🎉🎉🎉🎉", 0.95),
            ("p1", 1, "call me at 555-0100", 0.8),
            ("p1", 2, "nice answer", 0.7),
            ("p2", 0, "meh", 0.05),
            ("p2", 1, "also meh", None),
            ("p3", 0, "eval prompt reply", 0.99),
            ("zz", 0, "orphan", 0.9),
        ]
    )
    res = build_sft_dataset(
        prompts, c, SFTBuildConfig(min_score=0.3, mix={"rejection_sampled": 1.0}), pii_check=lambda t: "555" in t
    )
    assert res.dataset.column_names == ["messages", "source", "prompt_id"]
    by_prompt = {r["prompt_id"]: r["messages"] for r in res.dataset}
    assert set(by_prompt) == {"p0", "p1"}
    assert by_prompt["p0"][-1] == {"role": "assistant", "content": "the best reply here"}
    assert by_prompt["p1"][-1]["content"] == "nice answer"  # emoji and PII guards skipped the higher scores
    assert by_prompt["p0"][0] == {"role": "system", "content": "You are Robin."}
    reasons = drop_reasons(res)
    assert reasons["p0/gen1/1"] == "not_best" and reasons["p0/gen1/2"] == "not_best"
    assert res.drops.filter(pl.col("row_id") == "p0/gen1/1")["kept_id"][0] == "p0/gen1/0"
    assert reasons["p1/gen1/0"] == "too_many_emoji" and reasons["p1/gen1/1"] == "pii"
    assert reasons["p2/gen1/0"] == "below_score_floor" and reasons["p2/gen1/1"] == "no_score"
    assert reasons["p3"] == "not_train_split" and reasons["p3/gen1/0"] == "not_train_split"
    assert reasons["zz/gen1/0"] == "unknown_prompt"
    # every candidate is either kept or has a drop row
    assert res.drops.filter(pl.col("row_id").str.contains("/gen1/")).height + 2 == c.height
    assert res.drops.schema == schema.DROPS
    m = res.manifest
    assert m["rows"] == 2 and m["drops_by_reason"]["sft_data/not_best"] == 2 and m["pii_guard"] is True


def test_sft_mixture_meets_ratios_and_records_surplus():
    prompts = prompts_frame(10)
    c = cands([(f"p{i}", 0, f"sampled reply {i}", 1.0 + i) for i in range(10)])
    rewrites = pl.DataFrame({"prompt_id": ["p0", "p1", "nope"], "text": ["rewritten one", "rewritten two", "x y"]})
    mix = {"rejection_sampled": 0.5, "served_engaged": 0.3, "rewrite": 0.2}
    cfg = SFTBuildConfig(min_score=0.0, mix=mix, length_balance=None)  # the ratios are under test, not lengths
    res = build_sft_dataset(prompts, c, cfg, rewrites=rewrites)
    m = res.manifest
    # rewrites (2 rows at 20%) bound the mixture at 10 rows: 5 sampled, 3 served, 2 rewrites
    assert m["rows_by_source"] == {
        "rejection_sampled": 5,
        "steerability": 0,
        "repaired": 0,
        "served_engaged": 3,
        "rewrite": 2,
    }
    assert m["ratios_achieved"] == pytest.approx(
        {"rejection_sampled": 0.5, "steerability": 0.0, "repaired": 0.0, "served_engaged": 0.3, "rewrite": 0.2}
    )
    assert m["drops_by_reason"]["sft_data/mix_ratio_cap"] == 5 + 7
    assert drop_reasons(res)["nope/rewrite/2"] == "unknown_prompt"
    # the highest-scoring sampled replies are the ones kept
    kept = {r["prompt_id"] for r in res.dataset if r["source"] == "rejection_sampled"}
    assert kept == {"p5", "p6", "p7", "p8", "p9"}


def test_sft_served_engagement_filter_and_missing_sources():
    prompts = prompts_frame(3).with_columns(
        depth_after=pl.Series([0, 5, 5], dtype=pl.Int32), thumbs=pl.Series([None, None, -1], dtype=pl.Int8)
    )
    res = build_sft_dataset(prompts, cands([]), SFTBuildConfig(mix={"served_engaged": 1.0, "rewrite": 1.0}))
    assert [r["prompt_id"] for r in res.dataset] == ["p1"]
    assert drop_reasons(res)["p0/served"] == "low_engagement" and drop_reasons(res)["p2/served"] == "low_engagement"
    assert res.manifest["missing_sources"] == ["rewrite"] and res.manifest["ratios_target"] == {"served_engaged": 1.0}


def test_sft_manifest_hash_is_stable_and_content_sensitive(tmp_path):
    prompts = prompts_frame(3)
    c = cands([("p0", 0, "reply a", 1.0), ("p1", 0, "reply b", 1.0)])
    first = build_sft_dataset(prompts, c)
    again = build_sft_dataset(prompts, c)
    changed = build_sft_dataset(prompts, c.with_columns(text=pl.lit("different reply")))
    assert first.manifest["content_hash"] == again.manifest["content_hash"] != changed.manifest["content_hash"]
    out = first.save(tmp_path / "sft")
    loaded = datasets.load_from_disk(str(out / "dataset"))
    assert loaded.to_list() == first.dataset.to_list()
    assert json.loads((out / "manifest.json").read_text())["content_hash"] == first.manifest["content_hash"]
    assert pl.read_parquet(out / "drops.parquet").height == first.drops.height


def test_sft_config_validation():
    with pytest.raises(ValueError, match="unknown sources"):
        SFTBuildConfig(mix={"web": 1.0})
    with pytest.raises(ValueError, match="min_score_quantile"):
        SFTBuildConfig(min_score_quantile=2.0)
    assert SFTBuildConfig(guards={"max_chars": 50}).guards == StyleGuards(max_chars=50)


def test_sft_rewrites_in_annotation_form_use_their_own_prompt():
    prompts = prompts_frame(1)
    rewrites = pl.DataFrame(
        {
            "prompt_id": ["p0", "elsewhere", "bad"],
            "prompt": [None, [{"role": "user", "content": "what is up?"}], [{"role": "assistant", "content": "x"}]],
            "rewrite": ["a careful rewrite", "not much, you?", "whatever"],
        },
        schema_overrides={"prompt": pl.List(schema.MESSAGE)},
    )
    res = build_sft_dataset(prompts, cands([]), SFTBuildConfig(mix={"rewrite": 1.0}), rewrites=rewrites)
    got = {r["prompt_id"]: r["messages"] for r in res.dataset}
    assert got["elsewhere"] == [
        {"role": "user", "content": "what is up?"},
        {"role": "assistant", "content": "not much, you?"},
    ]
    assert got["p0"][-1]["content"] == "a careful rewrite" and got["p0"][0]["role"] == "system"
    assert drop_reasons(res)["bad/rewrite/2"] == "bad_prompt"


def test_a_mixture_of_a_given_size_repeats_the_scarce_source_instead_of_thinning_the_others():
    prompts = prompts_frame(10)
    c = cands([(f"p{i}", 0, f"sampled reply {i}", 1.0 + i) for i in range(10)])
    rewrites = pl.DataFrame({"prompt_id": ["p0", "p1"], "text": ["rewritten one", "rewritten two"]})
    mix = {"rejection_sampled": 0.5, "served_engaged": 0.3, "rewrite": 0.2}
    cfg = SFTBuildConfig(min_score=0.0, mix=mix, size=20, length_balance=None)
    res = build_sft_dataset(prompts, c, cfg, rewrites=rewrites)
    m = res.manifest
    # 20 rows: all 10 sampled replies, 6 of the 10 served ones, and the 2 rewrites twice each
    assert m["rows_by_source"] == {
        "rejection_sampled": 10,
        "steerability": 0,
        "repaired": 0,
        "served_engaged": 6,
        "rewrite": 4,
    }
    assert m["repeated_by_source"] == {
        "rejection_sampled": 0,
        "steerability": 0,
        "repaired": 0,
        "served_engaged": 0,
        "rewrite": 2,
    }
    assert m["ratios_achieved"]["rewrite"] == pytest.approx(0.2)
    rewrite_ids = sorted(res.frame.filter(pl.col("source") == "rewrite")["row_id"])
    assert rewrite_ids == ["p0/rewrite/0", "p0/rewrite/0#r1", "p1/rewrite/1", "p1/rewrite/1#r1"]
    assert m["drops_by_reason"]["sft_data/mix_ratio_cap"] == 4  # the served replies beyond their share
    # the repeats are the same examples, and the quality suite reads them as epochs, not duplicates
    texts = [r["messages"][-1]["content"] for r in res.dataset if r["source"] == "rewrite"]
    assert sorted(texts) == ["rewritten one", "rewritten one", "rewritten two", "rewritten two"]
    from quality.training_tables import _sft_derive

    derived = _sft_derive(res.frame.with_columns(messages=pl.Series(res.dataset["messages"])))
    assert derived.select("_example_key", "source").is_unique().all()
    # `max_examples` still caps it, and without `size` nothing repeats
    capped = build_sft_dataset(prompts, c, dataclasses.replace(cfg, max_examples=10), rewrites=rewrites)
    assert capped.manifest["rows"] == 10
    plain = build_sft_dataset(prompts, c, dataclasses.replace(cfg, size=None), rewrites=rewrites)
    assert plain.manifest["rows"] == 10 and not any(plain.manifest["repeated_by_source"].values())
    with pytest.raises(ValueError, match="size=0"):
        SFTBuildConfig(size=0)


def test_rejection_sampling_leaves_out_the_targets_that_would_shorten_the_replies():
    prompts = prompts_frame(12)
    rows = []
    for i in range(12):
        best = 20 if i < 10 else 80  # ten prompts whose best reply is short, two whose best is long
        for k, n in enumerate((10, 20, 40, 80)):
            rows.append((f"p{i}", k, f"{i}" + "a" * (n - 1 - len(str(i))) + ".", 0.9 if n == best else 0.1 * k))
    mix = {"rejection_sampled": 1.0}
    res = build_sft_dataset(prompts, cands(rows), SFTBuildConfig(min_score=0.0, mix=mix, length_neutral=False))
    shift = res.manifest["length_shift_by_source"]["rejection_sampled"]
    assert shift["before"] < -0.1 and abs(shift["after"]) <= 0.05 and abs(shift["kept"]) <= 0.05
    left_out = {r for r, why in drop_reasons(res).items() if why == "length_balance" and "/gen1/" in r}
    # a target of 20 characters is 47% below its prompt's mean of 37.5, one of 80 is 113% above: five short ones go
    assert len(left_out) == shift["left_out"] == 5
    assert all(int(r.split("/")[0][1:]) < 10 for r in left_out)  # only short targets go
    assert len(res.dataset) == 7
    unbalanced = build_sft_dataset(
        prompts, cands(rows), SFTBuildConfig(min_score=0.0, mix=mix, length_neutral=False, length_balance=None)
    )
    assert (
        len(unbalanced.dataset) == 12
        and unbalanced.manifest["length_shift_by_source"]["rejection_sampled"]["left_out"] == 0
    )
    with pytest.raises(ValueError, match="length_balance"):
        SFTBuildConfig(length_balance=-1.0)


def test_a_rows_reference_is_its_prompts_candidates_else_those_of_its_kind():
    from training.policy.sft_dataset import _length_reference

    frame = pl.DataFrame(
        {
            "prompt_id": ["steer:c", "steer:c", "steer:c", "p0", "p0", "p1"],
            "text": ["x" * 10, "x" * 100, "x" * 19, "x" * 30, "x" * 50, ""],
        }
    )
    by_id = {
        "steer:c": {"prompt_id": "steer:c", "instructions": "[]"},
        "steer:d": {"prompt_id": "steer:d", "instructions": "[]"},
        "p0": {"prompt_id": "p0"},
    }
    reference = _length_reference(frame, by_id)
    # a card that bounds the length is held to all its candidates: its brevity would reach traffic prompts
    assert reference({"prompt_id": "steer:c"}) == pytest.approx(43.0)
    assert reference({"prompt_id": "steer:d"}) == pytest.approx(43.0)  # no candidates: the cards' mean
    assert reference({"prompt_id": "p0"}) == pytest.approx(40.0)
    # only empty candidates, or none: the traffic prompts' mean
    assert reference({"prompt_id": "p1"}) == pytest.approx(80 / 3)
    assert reference({"prompt_id": "served-only"}) == pytest.approx(80 / 3)


def test_a_reference_is_the_length_of_the_replies_that_ended_on_their_own():
    from training.policy.sft_dataset import _length_reference

    frame = pl.DataFrame(
        {
            "prompt_id": ["p0", "p0", "p0", "p1", "p1"],
            "text": ["x" * 20, "x" * 40, "x" * 300, "x" * 250, "x" * 290],
            "ended": [True, None, False, False, False],  # None: not sampled here (a repair's original unknown)
        }
    )
    reference = _length_reference(frame, {"p0": {"prompt_id": "p0"}, "p1": {"prompt_id": "p1"}})
    assert reference({"prompt_id": "p0"}) == pytest.approx(30.0)  # the reply run into the limit does not count
    assert reference({"prompt_id": "p1"}) == pytest.approx(270.0)  # none ended: all of them


def test_a_reply_cut_off_at_the_token_limit_is_never_a_target():
    prompts = prompts_frame(2)
    c = cands(
        [("p0", 0, "a long reply that ran into the", 0.9), ("p0", 1, "A short one.", 0.5), ("p1", 0, "Fine.", 0.4)]
    )
    c = c.with_columns(ended=pl.Series([False, True, None]))
    res = build_sft_dataset(
        prompts, c, SFTBuildConfig(min_score=0.0, mix={"rejection_sampled": 1.0}, length_balance=None)
    )
    why = drop_reasons(res)
    assert why["p0/gen1/0"] == "cut_off"
    assert sorted(r["messages"][-1]["content"] for r in res.dataset) == ["A short one.", "Fine."]


def test_rule_keeping_card_replies_are_exempt_from_the_length_balance_by_default():
    from training.policy.steer_data import steer_prompts

    card = "steer:bramble:compost"
    prompts = pl.concat([prompts_frame(2), steer_prompts().filter(pl.col("prompt_id") == card)], how="diagonal_relaxed")
    long_breaker = "you could try turning the heap every single week and keeping it damp " * 3
    c = cands(
        [
            (card, 0, "Turn it weekly. What do you grow?", 0.9),
            (card, 1, "Keep it damp. Got a bin?", 0.8),
            (card, 2, long_breaker, 0.7),
            (card, 3, long_breaker + "really", 0.6),
        ]
    )
    mix = {"steerability": 1.0}
    kept = build_sft_dataset(prompts, c, SFTBuildConfig(min_score=0.0, mix=mix))
    assert not any(r.startswith("steer:") for r, why in drop_reasons(kept).items() if why == "length_balance")
    assert len(kept.dataset) == 2
    shift = kept.manifest["length_shift_by_source"]["steerability"]
    assert shift["exempt"] is True and shift["kept"] < -0.5  # what the card teaches is on the record
    balanced = build_sft_dataset(prompts, c, SFTBuildConfig(min_score=0.0, mix=mix, length_balance_exempt=()))
    assert sum(why == "length_balance" for why in drop_reasons(balanced).values()) == 1  # at most half goes
    with pytest.raises(ValueError, match="length_balance_exempt"):
        SFTBuildConfig(length_balance_exempt=("web",))
