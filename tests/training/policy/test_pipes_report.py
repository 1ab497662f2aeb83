import json
import os
import subprocess
import sys
from pathlib import Path

from dagster_pipes import encode_param

from tests.training.tiny_policy import ONE_THREAD_ENV, saved_datasets, tiny_policy_dir
from training.policy.pipes_report import StageReporter, pipes_metadata, stage_reporting, under_pipes

REPO = Path(__file__).resolve().parents[3]


def test_pipes_metadata_sends_containers_as_json():
    meta = pipes_metadata(
        {
            "steps": 2,
            "loss": 0.5,
            "ok": True,
            "curve": [{"step": 1}],
            "cfg": {"a": (1, 2)},
            "none": None,
            "path": Path("x"),
        }
    )
    assert meta["steps"] == 2 and meta["ok"] is True and meta["none"] is None and meta["path"] == "x"
    assert meta["curve"] == {"raw_value": [{"step": 1}], "type": "json"}
    assert meta["cfg"] == {"raw_value": {"a": [1, 2]}, "type": "json"}


def test_outside_pipes_reporting_goes_to_stderr(capsys, monkeypatch):
    monkeypatch.delenv("DAGSTER_PIPES_CONTEXT", raising=False)
    assert not under_pipes()
    with stage_reporting("sft") as reporter:
        assert isinstance(reporter, StageReporter) and reporter.extras_config() == {}
        reporter.progress("step 1/2")
        reporter.materialized({"steps": 2, "loss_curve": [1.0]})
    err = capsys.readouterr().err
    assert "[sft] step 1/2" in err and '"steps": 2' in err and "loss_curve" not in err


def test_grpo_script_under_pipes_reports_progress_and_materialization(tmp_path):
    data = saved_datasets(tmp_path / "data")
    out = tmp_path / "grpo"
    messages = tmp_path / "messages.jsonl"
    context = {
        "asset_keys": ["policy_grpo"],
        "code_version_by_asset_key": None,
        "provenance_by_asset_key": None,
        "partition_key": None,
        "partition_key_range": None,
        "partition_time_window": None,
        "run_id": "run-1",
        "job_name": None,
        "retry_number": 0,
        # the launching asset passes its config as extras; flags still override it
        "extras": {
            "config": {
                "model_name_or_path": tiny_policy_dir(),
                "dataset_path": data["rl"],
                "output_dir": str(out),
                "reward_loader": "tests.training.toy_reward:load_scorer",
                "max_steps": 3,
                "per_device_train_batch_size": 4,
                "num_generations": 2,
                "max_completion_length": 8,
                "device": "cpu",
            }
        },
    }
    env = {
        **os.environ,
        **ONE_THREAD_ENV,
        "DAGSTER_PIPES_CONTEXT": encode_param({"data": context}),
        "DAGSTER_PIPES_MESSAGES": encode_param({"path": str(messages)}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "training.policy.grpo", "--max_steps", "2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sent = [json.loads(line) for line in messages.read_text().splitlines()]
    methods = [m["method"] for m in sent]
    assert methods[0] == "opened" and methods[-1] == "closed"
    logs = [m["params"]["message"] for m in sent if m["method"] == "log"]
    assert any(line.startswith("step 2/2") for line in logs)
    (mat,) = [m["params"] for m in sent if m["method"] == "report_asset_materialization"]
    assert mat["asset_key"] == "policy_grpo"
    assert mat["metadata"]["steps"]["raw_value"] == 2
    assert mat["metadata"]["loss_curve"]["type"] == "json"
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
