"""Reading and writing a generation's partition of a lake table from its assets."""

import polars as pl

from assets.generation import GenerationPlan
from pipeline.lake import Lake, Partition


def gen_table(lake: Lake, table: str, plan: GenerationPlan) -> pl.DataFrame:
    """The generation's partition of `table`, empty when it has none."""
    part = Partition.generation(plan.generation)
    return lake.read(table, part) if lake.exists(table, part) else pl.DataFrame()


def write_drops(lake: Lake, plan: GenerationPlan, part: str, drops: pl.DataFrame) -> None:
    """Add one step's drops to the generation's `drops` partition (each step writes its own file)."""
    lake.write("drops", Partition.generation(plan.generation), drops, part=part, replace=False)
