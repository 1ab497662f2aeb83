"""The command that starts a training stage: plain `python -m`, `accelerate launch` or `torchrun`.

A stage is a module (`training.policy.sft|dpo|grpo`) that runs the same way under each launcher: TRL's trainers
read the distributed environment that accelerate or torchrun set up (RANK, WORLD_SIZE, ...), and FSDP or
DeepSpeed come from the accelerate config file, not from the stage's code. Only the argv differs, and it is
built here, so the Dagster resource, the Kubernetes pod and a person at a shell all start a stage identically.

Both multi-process launchers are started as `python -m <launcher module>` with the same interpreter as the
stage, rather than through their console scripts, so the command never depends on what `PATH` holds.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LAUNCHERS = ("python", "accelerate", "torchrun")


@dataclass(frozen=True)
class LaunchConfig:
    """How a training stage is started; the default is one plain process."""

    launcher: str = field(
        default="python",
        metadata={
            "help": "'python' (one process: `python -m <stage>`), 'accelerate' (`accelerate launch`: several "
            "GPUs, FSDP or DeepSpeed through `accelerate_config`) or 'torchrun' (DDP on the GPUs of each node)"
        },
    )
    num_processes: int = field(
        default=0,
        metadata={
            "help": "processes per machine (usually one per GPU); 0 leaves it to the accelerate config file, "
            "or to torchrun's default of one per GPU ('gpu')"
        },
    )
    num_machines: int = field(default=1, metadata={"help": "machines taking part (multi-node runs)"})
    machine_rank: int = field(default=0, metadata={"help": "this machine's rank among `num_machines`"})
    main_process_address: str | None = field(
        default=None, metadata={"help": "host of rank 0 for multi-node runs; None on one machine"}
    )
    main_process_port: int | None = field(
        default=None, metadata={"help": "rendezvous port; None lets the launcher choose (one machine only)"}
    )
    accelerate_config: str | None = field(
        default=None,
        metadata={
            "help": "accelerate config YAML (`accelerate config` writes one): distributed type, FSDP or "
            "DeepSpeed settings, mixed precision; accelerate launcher only"
        },
    )
    cpu: bool = field(
        default=False,
        metadata={
            "help": "accelerate only: processes on CPU, for tests and laptops (with num_processes > 1 they "
            "talk over gloo; set the stages' `device` to 'cpu')"
        },
    )
    extra_args: tuple[str, ...] = field(
        default=(), metadata={"help": "further launcher flags, placed before the stage module"}
    )

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"training `launcher`={self.launcher!r} is unknown: use one of {list(LAUNCHERS)}")
        if self.num_processes < 0:
            raise ValueError(f"training `num_processes`={self.num_processes} must be >= 0 (0 = launcher default)")
        if self.num_machines < 1 or not 0 <= self.machine_rank < self.num_machines:
            raise ValueError(
                f"training `num_machines`={self.num_machines} and `machine_rank`={self.machine_rank}: "
                "need num_machines >= 1 and 0 <= machine_rank < num_machines"
            )
        if self.num_machines > 1 and not (self.main_process_address and self.main_process_port):
            raise ValueError(
                "training `num_machines` > 1 needs `main_process_address` and `main_process_port` (rank 0's host)"
            )
        if self.launcher == "python" and (self.num_processes > 1 or self.num_machines > 1):
            raise ValueError(
                "training `launcher`='python' runs one process: set `launcher` to 'accelerate' or 'torchrun' "
                "for several processes or machines"
            )
        if self.accelerate_config and self.launcher != "accelerate":
            raise ValueError("training `accelerate_config` is read by `launcher`='accelerate' only")
        if self.cpu and self.launcher != "accelerate":
            raise ValueError("training `cpu` is an accelerate flag: set `launcher`='accelerate' or drop `cpu`")

    def check_files(self) -> None:
        """Fail before starting anything when a file the launcher will read is missing."""
        if self.accelerate_config and not Path(self.accelerate_config).is_file():
            raise ValueError(
                f"training `accelerate_config`={self.accelerate_config!r} is not a file: write one with "
                "`accelerate config --config_file PATH`, or unset it"
            )


def launcher_prefix(config: LaunchConfig, python: str | None = None) -> list[str]:
    """The argv up to (not including) the stage module."""
    python = python or sys.executable
    if config.launcher == "python":
        return [python, "-m"]
    if config.launcher == "accelerate":
        argv = [python, "-m", "accelerate.commands.launch"]
        if config.accelerate_config:
            argv += ["--config_file", config.accelerate_config]
        if config.cpu and config.num_processes > 1:
            # accelerate's `--cpu` starts one process; its multi-process launcher is `--multi_gpu` (torchrun
            # underneath), and ranks whose stage device is 'cpu' then train over gloo
            argv.append("--multi_gpu")
        elif config.cpu:
            argv.append("--cpu")
        if config.num_processes:
            argv += ["--num_processes", str(config.num_processes)]
        if config.num_machines > 1:
            argv += [
                "--num_machines",
                str(config.num_machines),
                "--machine_rank",
                str(config.machine_rank),
                "--main_process_ip",
                str(config.main_process_address),
            ]
        if config.main_process_port:
            argv += ["--main_process_port", str(config.main_process_port)]
        return [*argv, *config.extra_args, "-m"]
    argv = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(config.num_processes or "gpu")]
    if config.num_machines > 1:
        argv += [
            "--nnodes",
            str(config.num_machines),
            "--node_rank",
            str(config.machine_rank),
            "--master_addr",
            str(config.main_process_address),
            "--master_port",
            str(config.main_process_port),
        ]
    else:
        # one node: torchrun's own rendezvous on a free port, so two stages on one box never collide
        argv.append("--standalone")
    return [*argv, *config.extra_args, "-m"]


def stage_command(
    module: str, config: LaunchConfig | None = None, args: Sequence[str] = (), python: str | None = None
) -> list[str]:
    """The full argv that runs training stage `module` under `config`'s launcher, followed by the stage's `args`."""
    if not module or module.startswith("-"):
        raise ValueError(f"stage module {module!r} is not a module name such as 'training.policy.sft'")
    return [*launcher_prefix(config or LaunchConfig(), python), module, *args]


# What a training stage may see of its parent's environment: how to find programs and libraries, where caches and
# temporary files go, offline switches, GPU and thread settings, and the flywheel's own settings. Nothing else: a
# Dagster process holds secrets (the user-hash salt, storage and hub credentials) that training never needs.
_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "XDG_CACHE_HOME",
        "TOKENIZERS_PARALLELISM",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "DAGSTER_DISABLE_TELEMETRY",
    }
)
_ENV_PREFIXES = (
    "LC_",
    "HF_",
    "TRANSFORMERS_",
    "CUDA_",
    "NCCL_",
    "NVIDIA_",
    "CUBLAS_",
    "CUDNN_",
    "TORCH_",
    "PYTORCH_",
    "TORCHINDUCTOR_",
    "ACCELERATE_",
    "OMP_",
    "MKL_",
    "KMP_",
    "GLOO_",
    "FLYWHEEL_",
)
# refused whatever the name's prefix, and whatever `extra` asks for: HF_TOKEN, FLYWHEEL_USER_SALT, ...
_SECRET_WORDS = ("SALT", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "ACCESS_KEY", "PRIVATE")


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in _SECRET_WORDS) or upper.endswith("_KEY") or "_AUTH" in upper


def stage_env(environ: Mapping[str, str], extra: Sequence[str] = ()) -> dict[str, str]:
    """The variables of `environ` a training stage runs with: the allow-list, plus the names in `extra` (an
    operator's own, e.g. a proxy-free cache location). A secret-looking name in `extra` is an error."""
    refused = sorted(n for n in extra if is_secret_name(n))
    if refused:
        raise ValueError(
            f"training `env_passthrough` names {refused}, which look like secrets: training stages never receive "
            "secrets; remove them (a stage reads the lake and writes models, and needs no credential)"
        )
    wanted = set(extra)
    return {
        k: v
        for k, v in environ.items()
        if (k in _ENV_NAMES or k.startswith(_ENV_PREFIXES) or k in wanted) and not is_secret_name(k)
    }
