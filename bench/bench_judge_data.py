"""Benchmark: how much the judges gain from learning over every earlier day, and which engagement label wins.

Replays the default traffic (the packaged Chit-Chat corpus, 14 days) straight into static prompts (ingest, then
cut; no scrubbing, dedup or topics, so the counts are a little above a consolidated lake's), and for a window
(default: the last two days) prints:

- the judges' training and validation data (`pipeline.judge_data.time_ordered_split`): users, rows and days
  when they learn from the window alone and from every earlier day;
- the evaluation slices' users, the window's alone and pooled to `min_slice_users` (`pooled_slices`);
- the user simulator trained on either, with its AUC on the window's held-out users;
- the engagement-label choice (`training.rewards.engagement_label.choose_label`) of the pointwise reward model
  as `reward_model_pointwise` trains it (frozen all-MiniLM-L6-v2 embeddings, the default head), capped to
  `--rows` training rows: each label's AUC within turn-position strata next to a length-only scorer's.

    .venv/bin/python bench/bench_judge_data.py [--window 2026-01-13 2026-01-14] [--rows 3000]

No lake needed. A few minutes on a 2-core laptop (embedding the training rows is most of it). Figures go to
stdout and bench/out/bench_judge_data.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402

from evaluation.user_simulator import fit_user_simulator, turns_from_prompts  # noqa: E402
from pipeline.ingest import ingest_day  # noqa: E402
from pipeline.judge_data import JudgeDataConfig, pooled_slices, time_ordered_split  # noqa: E402
from pipeline.prompts import cut_prompts  # noqa: E402
from pipeline.sampling import SamplingConfig  # noqa: E402
from pipeline.sources import SourceConfig, available_days, read_day  # noqa: E402
from pipeline.user_split import held_out_prompts  # noqa: E402
from training.rewards.engagement_label import TARGET, choose_label  # noqa: E402
from training.rewards.reward_embedding import EmbeddingHeadConfig, EmbeddingRewardModel, sentence_embedder  # noqa: E402


def replayed_prompts() -> pl.DataFrame:
    source = SourceConfig()
    days = []
    for day in available_days(source):
        conversations = ingest_day(read_day(source, day), day).conversations
        days.append(cut_prompts(conversations).kept)
    return pl.concat(days, how="diagonal_relaxed")


def _data(split) -> dict:
    return {k: v for k, v in split.counters.items() if not k.startswith("dropped_")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", nargs="+", default=["2026-01-13", "2026-01-14"])
    parser.add_argument("--rows", type=int, default=3000, help="training rows of each label's model")
    args = parser.parse_args()
    window = [date.fromisoformat(d) for d in args.window]
    sampling, judge = SamplingConfig(), JudgeDataConfig()
    t0 = time.perf_counter()
    prompts = replayed_prompts()
    print(f"replayed {prompts.height} prompts of {prompts['day'].n_unique()} days in {time.perf_counter() - t0:.0f} s")

    alone = time_ordered_split(prompts.filter(pl.col("day").is_in(window)), window, sampling, judge)
    every = time_ordered_split(prompts, window, sampling, judge)
    held = held_out_prompts(prompts.filter(pl.col("day").is_in(window)), pl.DataFrame(), sampling)
    earlier = prompts.filter(pl.col("day") < min(window))
    pooled = pooled_slices(held, earlier, sampling, judge, trained_users=every.train["user_hash"])
    out: dict = {
        "window": args.window,
        "judges_window_only": _data(alone),
        "judges_every_earlier_day": _data(every),
        "slice_users": pooled.users_per_slice(),
    }
    print("judges' data, window only:   ", out["judges_window_only"])
    print("judges' data, every day:     ", out["judges_every_earlier_day"])
    print("slice users (window, pooled):", out["slice_users"])

    for name, split in (("window_only", alone), ("every_earlier_day", every)):
        t0 = time.perf_counter()
        sim, _ = fit_user_simulator(turns_from_prompts(split.train), validation=turns_from_prompts(split.validation))
        keys = ("users", "rows", "heldout_users", "heldout_rows", "heldout_auc")
        out[f"simulator_{name}"] = {k: sim.summary[k] for k in keys} | {"seconds": round(time.perf_counter() - t0)}
        print(f"user simulator, {name}:", out[f"simulator_{name}"])

    train = every.train
    if train.height > args.rows:
        train = train.sample(args.rows, seed=0)
    embed = sentence_embedder(backend="onnx-int8", device="cpu")
    config = EmbeddingHeadConfig(kind="pointwise", use_style=False, embedding_backend="onnx-int8")

    def fit(rows: pl.DataFrame) -> EmbeddingRewardModel:
        return EmbeddingRewardModel.fit_pointwise(rows, config, embed_fn=embed, label=TARGET)

    t0 = time.perf_counter()
    choice = choose_label(train, every.validation, fit)
    print(
        f"label choice in {time.perf_counter() - t0:.0f} s (train {train.height} rows, validation "
        f"{every.validation.height} rows of {len(every.held_out_users)} held-out users):"
    )
    with pl.Config(tbl_cols=-1, tbl_width_chars=200, float_precision=3):
        print(choice.measurements.drop("detail"))
    out["label_choice"] = choice.measurements.to_dicts()
    out["label"] = choice.label
    target = REPO / "bench" / "out" / "bench_judge_data.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
