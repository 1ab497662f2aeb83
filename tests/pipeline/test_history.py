"""Cross-day state: the same result in any order or concurrency, refusals that name the missing days,
staleness after an earlier day changes."""

from __future__ import annotations

import queue
import threading
import zlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.dedup_exact import ExactDedupConfig, exact_dedup
from pipeline.dedup_near import NearDedupConfig, near_dedup
from pipeline.history import DayChain, HistoryOrderError
from pipeline.ingest import ingest_day
from pipeline.prompts import PromptConfig, cut_prompts
from pipeline.semdedup import SemDedupConfig, history_kind, semantic_dedup, unit_rows
from pipeline.source_config import SourceConfig
from pipeline.sources import read_day

DAYS = [date(2026, 1, 11) + timedelta(days=i) for i in range(4)]
DIM = 64


def char_vectors(texts: list[str]) -> np.ndarray:
    """A cheap deterministic text embedding (hashed character 3-grams): near-identical texts get
    near-identical vectors, which is all the order test needs from an embedding."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        t = (t or "").lower()
        grams = [zlib.crc32(t[j : j + 3].encode()) % DIM for j in range(max(1, len(t) - 2))]
        np.add.at(out[i], grams, 1.0)
    return unit_rows(out)


@pytest.fixture(scope="module")
def replayed() -> dict[date, pl.DataFrame]:
    """Static prompts of four replayed days of the packaged Chit-Chat corpus (a quarter of the
    conversations, chosen by id, to keep the test fast)."""
    cfg = SourceConfig()
    days = {}
    for d in DAYS:
        prompts, _ = cut_prompts(ingest_day(read_day(cfg, d), d).conversations, PromptConfig()).frames
        quarter = pl.col("conversation_id").map_elements(lambda c: zlib.crc32(c.encode()) % 4 == 0, pl.Boolean)
        days[d] = prompts.filter(quarter).select("prompt_id", "conversation_id", "text", "day")
    # replayed traffic repeats greetings exactly; plant edited repeats of the previous day's longer
    # prompts too: a one-letter edit (a near duplicate) and the same ending after another prompt's
    # text (a semantic duplicate of the ending, too different as a whole for MinHash)
    for prev, d in zip(DAYS, DAYS[1:]):
        src = days[prev].filter(pl.col("text").str.len_chars().is_between(150, 400)).sort("prompt_id").head(3)
        pre = days[d].filter(pl.col("text").str.len_chars().is_between(300, 600)).sort("prompt_id").head(3)
        rows = [
            {"prompt_id": f"{d}-near-{i}", "conversation_id": f"{d}-n{i}", "text": t[:-1] + "x", "day": d}
            for i, t in enumerate(src["text"])
        ] + [
            {"prompt_id": f"{d}-sem-{i}", "conversation_id": f"{d}-s{i}", "text": p + " " + t, "day": d}
            for i, (p, t) in enumerate(zip(pre["text"], src["text"]))
        ]
        days[d] = pl.concat([days[d], pl.DataFrame(rows, schema=days[d].schema)])
    return days


def _run_day(root: Path, day: date, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    near_cfg, sem_cfg = NearDedupConfig(), SemDedupConfig()
    exact = exact_dedup(frame, history=DayChain(root / "exact", DAYS[0], ExactDedupConfig().history_kind()))
    near = near_dedup(exact.kept, near_cfg, history=DayChain(root / "near", DAYS[0], near_cfg.history_kind()))
    texts = near.kept["text"].to_list()
    sem = semantic_dedup(
        near.kept["prompt_id"],
        # prompts of this corpus open with shared chit-chat; vectors of the texts' ends tell them apart
        char_vectors([t[-120:] for t in texts]),
        sem_cfg,
        day=day,
        history=DayChain(root / "semantic", DAYS[0], history_kind(DIM)),
    )
    return {"exact": exact.drops, "near": near.drops, "semantic": sem.drops, "kept": sem.kept.select("row_id")}


def _run_all(root: Path, replayed: dict, order: list[date], workers: int) -> tuple[dict, list[str]]:
    """Run the days as a scheduler would: `workers` at a time, in the given order; a day refused for a
    missing earlier day goes back to the queue (Dagster's backfill waits for the previous partition)."""
    todo: queue.Queue[date] = queue.Queue()
    for d in order:
        todo.put(d)
    results: dict[date, dict] = {}
    refusals: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while len(results) < len(order):
            try:
                d = todo.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                out = _run_day(root, d, replayed[d])
                with lock:
                    results[d] = out
            except HistoryOrderError as exc:
                with lock:
                    refusals.append(str(exc))
                todo.put(d)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return results, refusals


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns)


def test_same_result_in_order_reversed_and_two_at_a_time(tmp_path: Path, replayed: dict) -> None:
    in_order, refused = _run_all(tmp_path / "in_order", replayed, DAYS, workers=1)
    assert not refused
    reverse, refused_rev = _run_all(tmp_path / "reverse", replayed, DAYS[::-1], workers=1)
    # the last day was tried first and refused, naming every earlier day it lacked
    assert all(d.isoformat() in refused_rev[0] for d in DAYS[:-1])
    pairs, _ = _run_all(tmp_path / "pairs", replayed, DAYS[::-1], workers=2)
    cross_day = {"exact": 0, "near": 0, "semantic": 0}
    for d in DAYS:
        for step in ("exact", "near", "semantic", "kept"):
            a = _sorted(in_order[d][step])
            assert a.equals(_sorted(reverse[d][step])), (d, step)
            assert a.equals(_sorted(pairs[d][step])), (d, step)
        cross_day["exact"] += in_order[d]["exact"]["kept_id"].str.starts_with("seen:").sum()
        cross_day["near"] += in_order[d]["near"]["detail"].str.contains("of 2026").sum()
        cross_day["semantic"] += in_order[d]["semantic"]["detail"].str.contains("kept on").sum()
    # the days do share duplicates of every kind, so the order could have mattered
    assert min(cross_day.values()) > 0, cross_day


def test_rerun_of_an_earlier_day_marks_later_days_stale(tmp_path: Path) -> None:
    kind = ExactDedupConfig().history_kind()
    chain = DayChain(tmp_path, DAYS[0], kind)

    def frame(d: date, texts: list[str]) -> pl.DataFrame:
        return pl.DataFrame(
            {"prompt_id": [f"{d}-{i}" for i in range(len(texts))], "text": texts, "day": [d] * len(texts)}
        )

    for d, texts in zip(DAYS, (["a", "b"], ["c"], ["d"], ["e"])):
        exact_dedup(frame(d, texts), history=chain)
    # the same result again changes nothing
    exact_dedup(frame(DAYS[1], ["c"]), history=chain)
    assert chain.stale_days() == []
    # another result: the days after it are stale, and the next day refuses to build on them
    exact_dedup(frame(DAYS[1], ["c", "a new text"]), history=chain)
    assert chain.stale_days() == DAYS[2:]
    with pytest.raises(HistoryOrderError, match=f"{DAYS[2]} is stale"):
        exact_dedup(frame(DAYS[3], ["e"]), history=chain)
    for d, texts in zip(DAYS[2:], (["d"], ["e"])):
        exact_dedup(frame(d, texts), history=chain)
    assert chain.stale_days() == []


def test_a_day_before_the_history_or_of_another_kind_is_refused(tmp_path: Path) -> None:
    chain = DayChain(tmp_path, DAYS[1], "exact|x")
    one = pl.DataFrame({"prompt_id": ["p"], "text": ["t"], "day": [DAYS[0]]})
    with pytest.raises(HistoryOrderError, match="before the first day"):
        exact_dedup(one, history=chain)
    exact_dedup(one.with_columns(day=pl.lit(DAYS[1])), history=chain)
    with pytest.raises(HistoryOrderError, match="settings changed"):
        exact_dedup(one.with_columns(day=pl.lit(DAYS[2])), history=DayChain(tmp_path, DAYS[1], "exact|y"))
    with pytest.raises(ValueError, match="exactly one day"):
        exact_dedup(pl.concat([one, one.with_columns(day=pl.lit(DAYS[1]))]), history=chain)


def test_compacted_segments_cover_the_history_in_log_pieces_and_follow_reruns(tmp_path: Path) -> None:
    from pipeline.dedup_exact import EXACT_COMPACTION
    from pipeline.history import days_covered

    start = DAYS[0]
    days = [start + timedelta(days=i) for i in range(6)]
    chain = DayChain(tmp_path, start, ExactDedupConfig().history_kind())

    def frame(d: date, text: str) -> pl.DataFrame:
        return pl.DataFrame({"prompt_id": [f"{d}"], "text": [text], "day": [d]})

    for i, d in enumerate(days[:5]):
        exact_dedup(frame(d, f"text {i}"), history=chain)
    # the block of days 0-3 was merged when day 3 committed, before any reader asked for it
    assert len(list(tmp_path.glob(f"seg-{days[0]}-{days[3]}-*.parquet"))) == 1
    pieces = chain.runs(days[5], compaction=EXACT_COMPACTION)
    assert [(p.day, p.last) for p in pieces] == [(days[0], days[3]), (days[4], days[4])]
    assert days_covered(pieces) == 5 and sum(p.rows for p in pieces) == 5
    segment = pieces[0].path
    assert pl.read_parquet(segment)["prompt_id"].to_list() == [str(d) for d in days[:4]]
    # a later read reuses the segment; the plain per-day view holds the same entries
    assert chain.runs(days[5], compaction=EXACT_COMPACTION)[0].path == segment
    plain = pl.concat([pl.read_parquet(r.path) for r in chain.runs(days[5])])
    assert plain.sort("text_hash").equals(pl.concat([pl.read_parquet(p.path) for p in pieces]).sort("text_hash"))
    # a re-run earlier day with another result: once the days after it are redone, a new segment replaces the old
    exact_dedup(frame(days[1], "another text"), history=chain)
    for i, d in enumerate(days[2:5], start=2):
        exact_dedup(frame(d, f"text {i}"), history=chain)
    renewed = chain.runs(days[5], compaction=EXACT_COMPACTION)[0].path
    assert renewed != segment and not segment.exists()
    from pipeline.text_hash import normalized_text_hashes

    hashes = pl.read_parquet(renewed)["text_hash"].to_list()
    kept, replaced = normalized_text_hashes(["another text", "text 1"])
    assert kept in hashes and replaced not in hashes and len(hashes) == 4


def test_a_day_without_traffic_is_committed(tmp_path: Path) -> None:
    chain = DayChain(tmp_path / "exact", DAYS[0], ExactDedupConfig().history_kind())
    near_chain = DayChain(tmp_path / "near", DAYS[0], NearDedupConfig().history_kind())
    empty = pl.DataFrame(schema={"prompt_id": pl.Utf8, "text": pl.Utf8, "day": pl.Date})
    with pytest.raises(ValueError, match="pass day="):
        exact_dedup(empty, history=chain)
    assert exact_dedup(empty, history=chain, day=DAYS[0]).kept.height == 0
    assert near_dedup(empty, history=near_chain, day=DAYS[0]).kept.height == 0
    nxt = pl.DataFrame({"prompt_id": ["a"], "text": ["user: hello there, how are you doing today?"], "day": [DAYS[1]]})
    assert exact_dedup(nxt, history=chain).counters.history_days == 0  # the empty day holds nothing
    assert near_dedup(nxt, history=near_chain).kept.height == 1


def test_a_truncated_sidecar_in_place_is_rewritten_not_reused(tmp_path: Path) -> None:
    from pipeline import keyfile

    chain = DayChain(tmp_path / "keys", DAYS[0], "test-keys", lock_home=tmp_path)
    entries = pl.DataFrame({"key": [3, 1, 2]})

    def write(path: Path) -> None:
        keyfile.save(path, np.array([[3, 1, 2]], dtype=np.uint64))

    chain.commit(DAYS[0], entries, sidecars={"keys": write})
    sidecar = chain.root / chain.manifest(DAYS[0])["sidecars"]["keys"]
    whole = sidecar.read_bytes()
    sidecar.write_bytes(whole[: len(whole) // 2])  # what a power loss before the fsync could leave
    chain.commit(DAYS[0], entries, sidecars={"keys": write})
    assert sidecar.read_bytes() == whole
    assert keyfile.load(sidecar)[0].tolist() == [1, 2, 3]
    # the commit left no temp file, and its lock lives outside the history
    assert [p.name for p in chain.root.iterdir() if p.name.startswith(".")] == []
    assert (tmp_path / "locks" / "state.keys").is_dir()
