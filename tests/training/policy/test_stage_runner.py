import json
from pathlib import Path

import datasets
import pytest

from pipeline.lake import replace_dir
from tests.training.tiny_policy import candidates_frame, prompts_frame
from training.policy.dpo import DPORunConfig
from training.policy.preference_dataset import build_preference_dataset
from training.policy.stage_runner import (
    dataset_content_hash,
    load_train_dataset,
    staging_output,
    trainer_kwargs,
)


@pytest.fixture(autouse=True)
def flywheel_home(tmp_path, monkeypatch):
    """Where a stage's output lock lives."""
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))


def test_trainer_kwargs_pin_cpu_and_disable_checkpoints(tmp_path):
    kw = trainer_kwargs(DPORunConfig(device="cpu", output_dir=str(tmp_path / "x")))
    # the trainer writes into a staging folder beside output_dir, never into output_dir itself
    assert Path(kw["output_dir"]).parent == tmp_path and Path(kw["output_dir"]).name.startswith(".x.tmp-")
    assert kw["use_cpu"] is True and kw["bf16"] is False
    assert kw["save_strategy"] == "no" and kw["report_to"] == "none"
    assert kw.get("activation_checkpointing", kw.get("gradient_checkpointing")) is False


def test_a_killed_stage_leaves_nothing_where_the_next_stage_reads(tmp_path):
    out = tmp_path / "gen-1" / "dpo"
    # a run killed half-way (kill -9) left its staging folder with a partial model, and no output_dir
    killed = out.with_name(".dpo.tmp-999999999")
    killed.mkdir(parents=True)
    (killed / "model.safetensors").write_bytes(b"half")
    cfg = DPORunConfig(device="cpu", output_dir=str(out))
    staging = staging_output(cfg)
    assert not out.exists() and not killed.exists() and staging.is_dir()
    # the re-run finishes: its folder is renamed onto output_dir in one step
    (staging / "model.safetensors").write_bytes(b"whole")
    replace_dir(staging, out)
    assert (out / "model.safetensors").read_bytes() == b"whole"
    assert [p.name for p in out.parent.iterdir()] == ["dpo"]


def test_load_train_dataset_checks_columns_and_rows(tmp_path):
    ds = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": "hi"}]] * 3, "extra": [1, 2, 3]})
    ds.save_to_disk(str(tmp_path / "d" / "dataset"))
    (tmp_path / "d" / "manifest.json").write_text(json.dumps({"content_hash": "abc"}))
    loaded = load_train_dataset(str(tmp_path / "d"), ["prompt"], max_samples=2)
    assert loaded.column_names == ["prompt"] and len(loaded) == 2
    with_optional = load_train_dataset(str(tmp_path / "d"), ["prompt"], optional=["extra", "instructions"])
    assert with_optional.column_names == ["prompt", "extra"]
    assert dataset_content_hash(str(tmp_path / "d")) == "abc" and dataset_content_hash(None) is None
    with pytest.raises(ValueError, match="lacks columns"):
        load_train_dataset(str(tmp_path / "d"), ["messages"])
    with pytest.raises(ValueError, match="not a directory"):
        load_train_dataset(str(tmp_path / "missing"), ["prompt"])
    datasets.Dataset.from_dict({"prompt": []}).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="empty"):
        load_train_dataset(str(tmp_path / "empty"), ["prompt"])
    # what an empty build writes loads back and is refused with the same message
    empty = build_preference_dataset(prompts_frame(1), candidates_frame(prompts_frame(1), per_prompt=1))
    assert len(empty.dataset) == 0
    empty.save(tmp_path / "empty-build")
    with pytest.raises(ValueError, match="empty"):
        load_train_dataset(str(tmp_path / "empty-build"), ["prompt", "chosen", "rejected"])


def test_each_attempt_stages_in_its_own_folder_and_one_attempt_writes_at_a_time(tmp_path, monkeypatch):
    import os

    from pipeline import locks
    from training.policy import stage_runner

    monkeypatch.setattr(locks, "DEFAULT_WAIT_S", 0.2)
    cfg = DPORunConfig(device="cpu", output_dir=str(tmp_path / "gen-1" / "dpo"))
    staging = staging_output(cfg)
    # named per attempt, never by the PID alone (every attempt in a container is PID 1)
    assert str(os.getpid()) not in staging.name and staging_output(cfg) == staging
    # another attempt of the same output, while this one holds it, waits and is then refused
    held = stage_runner._STAGING.pop(Path(cfg.output_dir))
    try:
        with pytest.raises(locks.WriterBusy, match="stage_output"):
            staging_output(cfg)
    finally:
        stage_runner._STAGING[Path(cfg.output_dir)] = held
    stage_runner.release_output(cfg)
    assert staging_output(cfg).is_dir()  # free again once released
    stage_runner.release_output(cfg)


def test_the_ranks_of_one_launch_share_an_attempt_and_launches_differ(monkeypatch):
    import os

    from training.policy.stage_runner import _attempt_id

    monkeypatch.delenv("FLYWHEEL_STAGE_ATTEMPT", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-7f3a")
    assert _attempt_id() == "launch-7f3a"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default without --rdzv-id
    launcher = _attempt_id()
    assert launcher.startswith(f"{os.getppid()}-") and launcher != f"{os.getppid()}-0"  # PID and start time
    monkeypatch.setenv("FLYWHEEL_STAGE_ATTEMPT", "set-by-the-launcher")
    assert _attempt_id() == "set-by-the-launcher"
