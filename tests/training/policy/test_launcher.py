"""The command that starts a training stage, for each launcher; TRL settings from a file; Pipes on rank 0 only."""

import json
from pathlib import Path

import pytest
from trl import DPOConfig, SFTConfig

from training.policy.dpo import DPORunConfig
from training.policy.launcher import LaunchConfig, stage_command, stage_env
from training.policy.pipes_report import process_rank, stage_reporting
from training.policy.stage_config import read_trl_overrides
from training.policy.stage_runner import trl_args


def test_python_is_the_default_launcher():
    assert stage_command("training.policy.sft", python="py") == ["py", "-m", "training.policy.sft"]
    assert stage_command("training.policy.dpo", args=["--max_steps", "2"], python="py")[-3:] == [
        "training.policy.dpo",
        "--max_steps",
        "2",
    ]


def test_accelerate_command_carries_config_file_processes_and_module(tmp_path):
    cfg = LaunchConfig(launcher="accelerate", num_processes=8, accelerate_config="fsdp.yaml")
    assert stage_command("training.policy.sft", cfg, python="py") == [
        "py",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "fsdp.yaml",
        "--num_processes",
        "8",
        "-m",
        "training.policy.sft",
    ]
    cpu = stage_command("training.policy.grpo", LaunchConfig(launcher="accelerate", num_processes=2, cpu=True))
    assert cpu[3:] == ["--multi_gpu", "--num_processes", "2", "-m", "training.policy.grpo"]
    one_cpu = stage_command("training.policy.grpo", LaunchConfig(launcher="accelerate", cpu=True))
    assert one_cpu[3:] == ["--cpu", "-m", "training.policy.grpo"]
    multi = LaunchConfig(
        launcher="accelerate",
        num_processes=8,
        num_machines=2,
        machine_rank=1,
        main_process_address="10.0.0.1",
        main_process_port=29500,
    )
    argv = stage_command("training.policy.sft", multi, python="py")
    assert argv[argv.index("--num_machines") : argv.index("-m", 3)] == [
        "--num_machines",
        "2",
        "--machine_rank",
        "1",
        "--main_process_ip",
        "10.0.0.1",
        "--main_process_port",
        "29500",
    ]


def test_torchrun_command_is_standalone_on_one_node_and_rendezvous_on_several():
    one = stage_command("training.policy.dpo", LaunchConfig(launcher="torchrun"), python="py")
    assert one == ["py", "-m", "torch.distributed.run", "--nproc_per_node", "gpu", "--standalone", "-m"] + [
        "training.policy.dpo"
    ]
    two = LaunchConfig(
        launcher="torchrun", num_processes=4, num_machines=2, main_process_address="h0", main_process_port=29400
    )
    argv = stage_command("training.policy.dpo", two, python="py")
    assert argv[3:5] == ["--nproc_per_node", "4"] and "--standalone" not in argv
    assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--master_addr") + 1] == "h0"


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"launcher": "mpirun"}, "launcher"),
        ({"num_processes": 2}, "launcher"),
        ({"launcher": "torchrun", "num_processes": -1}, "num_processes"),
        ({"launcher": "torchrun", "accelerate_config": "x.yaml"}, "accelerate_config"),
        ({"launcher": "torchrun", "cpu": True}, "cpu"),
        ({"launcher": "accelerate", "num_machines": 2}, "main_process_address"),
    ],
)
def test_bad_launch_settings_name_the_setting(kwargs, setting):
    with pytest.raises(ValueError, match=setting):
        LaunchConfig(**kwargs)


def test_missing_accelerate_config_fails_before_starting(tmp_path):
    LaunchConfig(launcher="accelerate").check_files()
    with pytest.raises(ValueError, match="accelerate_config"):
        LaunchConfig(launcher="accelerate", accelerate_config=str(tmp_path / "none.yaml")).check_files()
    with pytest.raises(ValueError, match="module"):
        stage_command("--help")


def test_trl_settings_pass_through_whole_from_yaml_or_json(tmp_path):
    yaml_file = tmp_path / "trl.yaml"
    yaml_file.write_text("report_to: [none]\nmax_length: 64\nadam_beta2: 0.95\n")
    cfg = DPORunConfig(device="cpu", output_dir=str(tmp_path / "out"), trl_config=str(yaml_file))
    args = trl_args(DPOConfig, cfg, beta=0.2, max_length=128)
    assert args.report_to == []  # transformers reads ["none"] as no integration
    assert args.max_length == 64 and args.adam_beta2 == 0.95  # the file wins over the stage's own values
    # the trainer writes into the stage's staging folder; finish_stage renames it onto output_dir
    assert args.beta == 0.2 and args.output_dir.startswith(str(tmp_path / ".out.tmp-"))
    json_file = tmp_path / "trl.json"
    json_file.write_text(json.dumps({"report_to": "none", "packing": True}))
    assert read_trl_overrides(str(json_file), SFTConfig) == {"report_to": "none", "packing": True}
    assert read_trl_overrides(None, SFTConfig) == {}


@pytest.mark.parametrize(
    "content, message",
    [
        ("packing: true\n", "not fields of DPOConfig"),
        ("output_dir: elsewhere\n", "stage settings"),
        ("- a list\n", "mapping"),
        ("push_to_hub: true\n", "push_to_hub"),
        ("hub_model_id: org/model\nhub_token: hf_x\n", "hub_model_id', 'hub_token"),
        ("report_to: [tensorboard]\n", "report_to=\\['tensorboard'\\]"),
        ("report_to: wandb\n", "report_to='wandb'"),
        ("trust_remote_code: true\n", "trust_remote_code"),
        ("model_init_kwargs: {token: hf_x, torch_dtype: bfloat16}\n", "model_init_kwargs.token"),
    ],
)
def test_bad_trl_file_fails_naming_the_fields(tmp_path, content, message):
    path = tmp_path / "trl.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_trl_overrides(str(path), DPOConfig)
    with pytest.raises(ValueError, match="not a file"):
        read_trl_overrides(str(tmp_path / "missing.yaml"), DPOConfig)


def test_only_rank_zero_opens_the_pipes_channel(tmp_path, monkeypatch):
    from dagster_pipes import encode_param

    context = {"extras": {"config": {"max_steps": 3}}, "asset_keys": ["x"], "run_id": "r", "retry_number": 0}
    messages = tmp_path / "messages.jsonl"
    monkeypatch.setenv("DAGSTER_PIPES_CONTEXT", encode_param({"data": context}))
    monkeypatch.setenv("DAGSTER_PIPES_MESSAGES", encode_param({"path": str(messages)}))
    monkeypatch.setenv("RANK", "1")
    assert process_rank() == 1
    with stage_reporting("sft") as reporter:
        # a non-zero rank reads the launching asset's config but writes nothing back
        assert reporter.extras_config() == {"max_steps": 3}
        reporter.progress("step 1/3")
    assert not messages.exists()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK"):
        process_rank()


def test_the_shipped_trl_example_is_accepted_by_every_stage():
    from trl import GRPOConfig

    example = Path(__file__).resolve().parents[3] / "deploy" / "trl.example.yaml"
    for config_cls in (SFTConfig, DPOConfig, GRPOConfig):
        assert read_trl_overrides(str(example), config_cls)["optim"] == "adamw_torch_fused"


def test_a_stage_gets_the_allow_listed_environment_and_never_a_secret():
    parent = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "PYTHONPATH": "/src",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "NCCL_DEBUG": "WARN",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "FLYWHEEL_HOME": "/flywheel/home",
        "FLYWHEEL_TRAIN_LAUNCHER": "accelerate",
        "FLYWHEEL_USER_SALT": "s3cret-salt-0123456789",
        "HF_TOKEN": "hf_x",
        "HUGGING_FACE_HUB_TOKEN": "hf_y",
        "AWS_SECRET_ACCESS_KEY": "k",
        "DATABASE_URL": "postgresql://u:p@h/db",
        "DAGSTER_PG_PASSWORD": "p",
        "WANDB_API_KEY": "w",
        "MY_PROXY": "http://proxy",
        "FLYWHEEL_SIGNING_KEY": "k",
        "HF_HUB_AUTH_HEADER": "Bearer x",
    }
    env = stage_env(parent)
    assert env == {k: parent[k] for k in list(parent)[:11]}
    assert stage_env(parent, ["MY_PROXY"])["MY_PROXY"] == "http://proxy"
    with pytest.raises(ValueError, match="env_passthrough.*FLYWHEEL_USER_SALT"):
        stage_env(parent, ["FLYWHEEL_USER_SALT"])
