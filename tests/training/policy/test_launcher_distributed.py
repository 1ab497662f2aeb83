"""Training stages in two CPU processes (DDP over gloo), launched the way the Dagster resource does it: both ranks
train, rank 0 alone reports through Pipes and writes the checkpoint."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from dagster_pipes import encode_param
from transformers import AutoModelForCausalLM

from tests.training.tiny_policy import ONE_THREAD_ENV, saved_datasets, tiny_policy_dir
from training.policy.launcher import LaunchConfig, stage_command

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.integration
def test_two_process_accelerate_sft_reports_once_from_rank_zero(tmp_path):
    data = saved_datasets(tmp_path / "data")
    out = tmp_path / "sft"
    messages = tmp_path / "messages.jsonl"
    context = {
        "asset_keys": ["sft_checkpoint"],
        "run_id": "run-1",
        "retry_number": 0,
        "extras": {
            "config": {
                "model_name_or_path": tiny_policy_dir(),
                "dataset_path": data["sft"],
                "output_dir": str(out),
                "max_steps": 2,
                "per_device_train_batch_size": 2,
                "max_length": 64,
                "device": "cpu",
                # the LoRA path: adapters saved aside, merged by rank 0 into a plain checkpoint
                "use_lora": True,
                "lora_r": 4,
            }
        },
    }
    env = {
        **os.environ,
        **ONE_THREAD_ENV,
        "DAGSTER_PIPES_CONTEXT": encode_param({"data": context}),
        "DAGSTER_PIPES_MESSAGES": encode_param({"path": str(messages)}),
    }
    command = stage_command(
        "training.policy.sft",
        LaunchConfig(launcher="accelerate", num_processes=2, cpu=True, main_process_port=29517),
    )
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sent = [json.loads(line) for line in messages.read_text().splitlines()]
    methods = [m["method"] for m in sent]
    assert methods.count("opened") == 1 and methods.count("closed") == 1
    (mat,) = [m["params"] for m in sent if m["method"] == "report_asset_materialization"]
    assert mat["metadata"]["world_size"]["raw_value"] == 2 and mat["metadata"]["steps"]["raw_value"] == 2
    assert "[sft:rank1]" in proc.stderr  # rank 1 ran, and logged locally only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["use_lora"] is True
    assert (out / "model.safetensors").is_file() and not list(out.glob("adapter*")) and not (out / ".adapter").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())


@pytest.mark.integration
def test_two_process_torchrun_dpo_writes_one_full_checkpoint(tmp_path):
    data = saved_datasets(tmp_path / "data")
    out = tmp_path / "dpo"
    args = ["--model_name_or_path", tiny_policy_dir(), "--dataset_path", data["prefs"], "--output_dir", str(out)]
    args += ["--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "64", "--device", "cpu"]
    command = stage_command("training.policy.dpo", LaunchConfig(launcher="torchrun", num_processes=2), args=args)
    proc = subprocess.run(command, cwd=REPO, env={**os.environ, **ONE_THREAD_ENV}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[dpo:rank1] done" in proc.stderr and "[dpo] done" in proc.stderr
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
