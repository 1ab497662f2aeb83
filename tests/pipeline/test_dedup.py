"""Exact then near dedup together: the planted duplicate set (P/R), the cross-day index and re-runs.

Run with `pytest -s` to see the precision/recall figures.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import polars as pl
import pytest

from pipeline.dedup_exact import SEEN_PREFIX, exact_dedup
from pipeline.dedup_near import NearDedupConfig, near_dedup
from pipeline.history import DayChain
from pipeline.planted import (
    EXACT,
    NEAR,
    NEIGHBOUR,
    ORIGINAL,
    PlantedConfig,
    build_planted_duplicates,
    score_drops,
)
from pipeline.text_hash import normalize_text
from tests.pipeline.dedup_frames import D1, D2, D3, exact_chain, near_chain, prompt_frame

# Used when ../shared/data is absent: distinct chat lines, paired into two-turn histories below.
FALLBACK_LINES = [
    "Hey, how was your weekend at the lake with your cousins?",
    "It was great, we went kayaking and saw a family of otters near the dock.",
    "I just finished reading that mystery novel you recommended last month.",
    "Did you guess who the culprit was before the big reveal at the end?",
    "My roommate keeps leaving dirty dishes in the sink and it drives me crazy.",
    "Maybe put up a chore chart on the fridge so everyone knows their turn.",
    "Do you want to grab lunch after the chemistry lab tomorrow afternoon?",
    "Sure, the new ramen place on fifth street has really good reviews.",
    "The hike up to the waterfall was much harder than I expected it to be.",
    "Bring more water next time, that trail gets really hot by noon.",
    "I think the second season of that space show is better than the first.",
    "The villain finally has a believable reason for what he is doing.",
    "We should totally plan a road trip along the coast this summer.",
    "Only if we stop at every weird roadside attraction along the way.",
    "My sister just got engaged, so the whole family is planning a party.",
    "Congratulations to her, do you know when the wedding is going to be?",
    "What kind of music have you been listening to while you study lately?",
    "Mostly instrumental jazz, lyrics distract me when I am writing essays.",
    "I tried baking sourdough bread for the first time and it came out flat.",
    "Your starter probably needed a few more days to get strong enough.",
    "The library is eerily quiet during finals week, nobody even whispers.",
    "I always end up on the top floor where the old maps are stored.",
    "Have you ever been skiing up in the canyon resorts during a storm?",
    "Once, and I could not see my own skis for most of the afternoon.",
    "I am thinking about switching my major from biology to statistics.",
    "Statistics jobs pay well and you can still work on biology problems.",
    "That documentary about deep sea creatures had an amazing soundtrack.",
    "The glowing squid scene gave me chills, it looked like another planet.",
    "My dog learned how to open the back door all by himself last week.",
    "You should get a lock for it before he lets himself into the pantry.",
    "It rained all weekend so we stayed inside and played board games.",
    "Which game won, I am guessing the one with the trains and tickets.",
    "I need a better strategy for waking up early for my eight o'clock class.",
    "Put your alarm across the room so you have to stand up to turn it off.",
    "The concert last night was incredibly loud but so much fun overall.",
    "My ears are still ringing, I should have brought the foam earplugs.",
    "Would you rather live by the ocean or up in the quiet mountains?",
    "Mountains for sure, I burn way too easily to live near a beach.",
    "I started running again and my legs are sore from the first mile.",
    "Stretch before bed and it will feel better in a couple of days.",
    "We are having a potluck dinner on Sunday evening if you want to come.",
    "I will bring my grandmother's famous lemon bars, they always disappear.",
    "My favorite holiday is probably Thanksgiving because of all the pie.",
    "Pumpkin or pecan, because that question has ended friendships before.",
    "I keep forgetting to water my houseplants and they look really sad.",
    "Succulents are hard to kill, maybe start with a couple of those.",
    "The professor gave us an extra week for the group project, thankfully.",
    "Good, because our group has not even picked a topic yet, honestly.",
    "I have never tried sushi but everyone keeps saying I absolutely should.",
    "Start with a cooked roll, the spicy shrimp ones are a safe first step.",
    "Our intramural team finally won a game after losing five in a row.",
    "The secret was that our best player finally showed up on time.",
    "Sometimes I just want to sit outside under a tree and read for hours.",
    "The botanical garden has benches in the shade that are perfect for it.",
    "Send me the details of the apartment and I will take a look tonight.",
    "The rent is fair but the landlord only answers emails on Tuesdays.",
    "Did you see the meteor shower last night from the observatory hill?",
    "We counted twenty shooting stars before the clouds rolled in at two.",
    "I am learning to play the ukulele from videos and my fingers hurt.",
    "Calluses take a couple of weeks, after that the chords get easier.",
]


def _histories_from_lines(lines: list[str]) -> list[str]:
    return [f"user: {lines[i]}\nassistant: {lines[i + 1]}" for i in range(0, len(lines) - 1, 2)]


def _histories_from_shared(data_dir: Path, seed: int = 0) -> list[str]:
    """Prompt-like rendered histories: the first k messages of each real conversation."""
    with gzip.open(data_dir / "chitchat_dataset.json.gz", "rt") as f:
        convs = json.load(f)
    rng = random.Random(seed)
    out = []
    for conv in convs.values():
        msgs = [m["text"] for turn in conv["messages"] for m in turn]
        k = rng.randint(1, min(len(msgs), 10))
        out.append("\n".join(("user: " if i % 2 == 0 else "assistant: ") + m for i, m in enumerate(msgs[:k])))
    return out


@pytest.fixture(scope="module")
def real_histories(shared_data: Path) -> list[str]:
    return _histories_from_shared(shared_data)


# --- planted set: precision and recall ----------------------------------------------------------------------


def _measure(planted: pl.DataFrame, backend: str) -> dict[str, dict[str, float]]:
    ex = exact_dedup(planted)
    nd = near_dedup(ex.kept, NearDedupConfig(backend=backend))
    return {
        "exact": score_drops(planted, ex.drops, truth_col="exact_group"),
        "near": score_drops(ex.kept, nd.drops),
        "pipeline": score_drops(planted, pl.concat([ex.drops, nd.drops])),
    }


def _report(title: str, planted: pl.DataFrame, results: dict[str, dict[str, dict[str, float]]]) -> None:
    kinds = dict(planted.group_by("kind").len().iter_rows())
    print(f"\n{title}: {kinds}")
    for backend, res in results.items():
        for stage, m in res.items():
            print(
                f"  {backend:<10} {stage:<8} precision {m['precision']:.3f} recall {m['recall']:.3f} "
                f"({m['correct']}/{m['expected']} expected, {m['drops']} drops)"
            )


def _assert_targets(res: dict[str, dict[str, float]]) -> None:
    assert res["exact"]["precision"] >= 0.99 and res["exact"]["recall"] >= 0.99
    assert res["near"]["precision"] >= 0.95 and res["near"]["recall"] >= 0.95
    assert res["pipeline"]["precision"] >= 0.95 and res["pipeline"]["recall"] >= 0.95


def test_planted_fallback() -> None:
    texts = _histories_from_lines(FALLBACK_LINES)
    planted = build_planted_duplicates(texts, PlantedConfig(n_originals=12, near_variants=3, exact_variants=2))
    res = _measure(planted, "rensa")
    _report("planted set (built-in texts)", planted, {"rensa": res})
    _assert_targets(res)


def test_planted_real(real_histories: list[str]) -> None:
    planted = build_planted_duplicates(real_histories, PlantedConfig(n_originals=300))
    assert planted.filter(pl.col("kind") == NEAR).height == 600
    results = {b: _measure(planted, b) for b in ("rensa", "datasketch")}
    _report("planted set (real chat histories)", planted, results)
    for res in results.values():
        _assert_targets(res)


def test_planted_builder_is_deterministic_with_truth(real_histories: list[str]) -> None:
    cfg = PlantedConfig(n_originals=40, seed=5)
    a, b = build_planted_duplicates(real_histories, cfg), build_planted_duplicates(real_histories, cfg)
    assert a.equals(b)
    assert set(a["kind"]) == {ORIGINAL, EXACT, NEAR, NEIGHBOUR}
    assert a["prompt_id"].n_unique() == a.height
    norm = a.with_columns(n=pl.col("text").map_elements(normalize_text, return_dtype=pl.Utf8))
    originals = dict(norm.filter(pl.col("kind") == ORIGINAL).select("truth_group", "n").iter_rows())
    for row in norm.filter(pl.col("kind") != ORIGINAL).iter_rows(named=True):
        if row["kind"] == EXACT:
            assert row["n"] == originals[row["truth_group"]]
        elif row["kind"] == NEAR:
            assert row["n"] != originals[row["truth_group"]]
        else:
            assert row["truth_group"] not in originals  # a neighbour is a group of its own
    with pytest.raises(ValueError, match="n_originals"):
        build_planted_duplicates(real_histories[:10], cfg)


# --- cross-day ----------------------------------------------------------------------------------------------


def _split_days(planted: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    day1 = planted.filter(pl.col("kind").is_in([ORIGINAL, NEIGHBOUR])).with_columns(day=pl.lit(D1))
    day2 = planted.filter(pl.col("kind").is_in([EXACT, NEAR])).with_columns(day=pl.lit(D2))
    return day1, day2


def _run_day(df: pl.DataFrame, seen: DayChain, index: DayChain) -> tuple:
    ex = exact_dedup(df, history=seen)
    nd = near_dedup(ex.kept, history=index)
    return ex, nd


def test_cross_day_index_and_idempotent_rerun(tmp_path: Path) -> None:
    planted = build_planted_duplicates(
        _histories_from_lines(FALLBACK_LINES), PlantedConfig(n_originals=12, near_variants=2)
    )
    day1, day2 = _split_days(planted)
    index = near_chain(tmp_path / "near_index")
    hashes = exact_chain(tmp_path / "hashes")

    ex1, nd1 = _run_day(day1, hashes, index)
    assert nd1.drops.height == 0  # originals and neighbours are all distinct
    assert index.committed_days() == [D1]

    ex2, nd2 = _run_day(day2, hashes, index)
    # every exact variant matches a day-1 hash, every near variant a day-1 signature
    assert ex2.counters.exact_cross_day == day2.filter(pl.col("kind") == EXACT).height
    assert set(ex2.drops["kept_id"].str.slice(0, len(SEEN_PREFIX))) == {SEEN_PREFIX}
    truth = dict(zip(planted["prompt_id"], planted["truth_group"]))
    assert nd2.counters.near_cross_day >= 0.95 * day2.filter(pl.col("kind") == NEAR).height
    cross = nd2.drops.filter(pl.col("detail").str.contains(str(D1)))
    assert all(truth[r] == truth[k] for r, k in zip(cross["row_id"], cross["kept_id"]))
    assert set(cross["kept_id"]) <= set(day1["prompt_id"])

    # re-running day 2 sees exactly what the first run saw: same drops, same index file
    before = index.manifest(D2)
    ex2b, nd2b = _run_day(day2, hashes, index)
    assert ex2b.drops.equals(ex2.drops) and nd2b.drops.equals(nd2.drops) and nd2b.kept.equals(nd2.kept)
    assert index.manifest(D2) == before
    # re-running day 1 afterwards does not see day 2
    ex1b, nd1b = _run_day(day1, hashes, index)
    assert ex1b.kept.height == day1.height and nd1b.drops.height == 0

    # day 2 re-materialized with other content replaces its file (not appended to it); a text first
    # seen there and repeated with an edit on day 3 is matched through that file
    novel = "user: " + " ".join(FALLBACK_LINES[-4:])
    nd2c = near_dedup(prompt_frame([("new2", novel)], D2), history=index)
    assert nd2c.kept.height == 1 and index.manifest(D2)["rows"] == 1
    day3 = prompt_frame([("new3", novel.replace("meteor", "meteors"))], D3)
    nd3 = near_dedup(day3, history=index)
    assert nd3.drops["kept_id"].to_list() == ["new2"] and nd3.counters.near_cross_day == 1
    assert nd3.counters.history_days == 2 and nd3.counters.history_matches >= 1
    assert near_dedup(day3, NearDedupConfig(lookback_days=1), history=index).counters.history_days == 1
