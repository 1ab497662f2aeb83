"""The code location loads, and every asset says what it is: a group, a description and, for a table, its
column schema (the contract a person reads in the UI before opening the data)."""

import dagster as dg

from assets.definitions import defs

# assets that are a model folder, a report or a plan, not a table: they link their files instead
NOT_TABLES = {
    "generation_plan",
    "quality_report",
    "generation_report",
    "policy_base",
    "reward_model_pointwise",
    "reward_model_pairwise",
    "sft_checkpoint",
    "dpo_checkpoint",
    "grpo_checkpoint",
}


def _assets() -> dict[str, object]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def test_definitions_load_with_their_jobs():
    dg.Definitions.validate_loadable(defs)
    assert {"consolidation", "generation"} <= {job.name for job in defs.resolve_all_job_defs()}


def test_every_asset_has_a_group_a_description_and_a_column_schema():
    assets = _assets()
    assert NOT_TABLES <= set(assets), sorted(NOT_TABLES - set(assets))
    for name, node in assets.items():
        assert node.group_name and node.group_name != "default", f"{name} has no group"
        assert node.description and len(node.description) > 20, f"{name} has no description"
        if name in NOT_TABLES:
            continue
        schema = (node.metadata or {}).get("dagster/column_schema")
        assert isinstance(schema, dg.TableSchema), f"{name} declares no dagster/column_schema"
        assert schema.columns and all(c.type for c in schema.columns), name


def test_daily_tables_declare_their_contract():
    from pipeline import schema

    assets = _assets()
    for name, contract in (
        ("conversations", schema.CONVERSATIONS),
        ("quarantine", schema.QUARANTINE),
        ("unique_prompts", schema.PROMPTS),
    ):
        declared = assets[name].metadata["dagster/column_schema"]
        assert [c.name for c in declared.columns] == list(contract), name
