"""The semantic history's indexes: one shared quantizer after the first 32 days, merges that move lists,
searches equal to a brute-force scan when every list is probed, new runs after the first month changes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from pipeline.history import DayChain
from pipeline.semdedup import SemDedupConfig, history_kind, semantic_dedup
from pipeline.semindex import assign_lists, quantizer_digest, search_runs, segment_compaction
from tests.pipeline.test_semdedup import D1, clustered, near_copies


def test_runs_after_the_first_32_days_share_one_quantizer_and_merge_by_moving_lists(tmp_path):
    import faiss

    days = [D1 + timedelta(days=i) for i in range(35)]
    xs = [clustered(10, seed=100 + i) for i in range(34)]
    hist = DayChain(tmp_path, D1, history_kind(64))
    for d, x in zip(days, xs):
        semantic_dedup([f"{d}-{i}" for i in range(10)], x, day=d, history=hist)

    def ivf(run):
        return faiss.read_index(str(run.sidecars["faiss"]))

    def quantizer_of(run) -> str:
        index = ivf(run)  # held: the quantizer belongs to it
        assert isinstance(index, faiss.IndexIVF)
        return quantizer_digest(index.quantizer)

    anchor, merged = hist.runs(days[34], compaction=segment_compaction(SemDedupConfig(), hist))
    assert (anchor.day, anchor.last, merged.day, merged.last) == (days[0], days[31], days[32], days[33])
    # 320 rows train 320 // 15 = 21 lists; the later days' runs and their merged segment reuse them
    assert ivf(anchor).nlist == 21 and ivf(merged).ntotal == 20
    assert {quantizer_of(run) for run in [merged, *hist.runs(days[34])[32:]]} == {quantizer_of(anchor)}
    # nprobe covers all 21 lists: the search is exact, so it equals a brute-force scan of every stored row
    probe = near_copies(np.vstack(xs)[::7], 0.05, seed=3)
    sims, ids, _ = search_runs([anchor, merged], probe, use_gpu=False, nprobe=21)
    everything = np.vstack(xs) @ probe.T
    all_ids = [f"{d}-{i}" for d in days[:34] for i in range(10)]
    assert ids == [all_ids[j] for j in everything.argmax(axis=0)]
    np.testing.assert_allclose(sims, everything.max(axis=0), atol=1e-3)  # fp16 codes

    # another first day trains another quantizer: the later runs are re-made, not reused
    before = {run.path.name for run in hist.runs(days[34])[32:]}
    for i, (d, x) in enumerate(zip(days, [clustered(10, seed=999), *xs[1:]])):
        semantic_dedup([f"{d}-{i}" for i in range(10)], x, day=d, history=hist)
    after = hist.runs(days[34])[32:]
    assert hist.stale_days() == [] and not before & {run.path.name for run in after}


def test_assign_lists_ranks_the_nearest_lists_first() -> None:
    rng = np.random.default_rng(5)
    cents = rng.standard_normal((40, 16)).astype(np.float32)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    sims, lists = assign_lists(cents, x, 5, block=64)  # several blocks
    full = x @ cents.T
    np.testing.assert_array_equal(lists, np.argsort(-full, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(sims, np.take_along_axis(full, lists, axis=1), rtol=1e-5)
    assert assign_lists(cents, x, 99)[1].shape == (300, 40)  # k above the number of lists: all of them
