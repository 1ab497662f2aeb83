"""Small helpers that turn frames into Dagster metadata a person can read at a glance."""

import dagster as dg
import polars as pl

from quality.markdown import plain_text


def counts_table(counts: dict[str, int], key: str = "reason", total: int | None = None) -> dg.MetadataValue:
    """Counts per key (e.g. drops per reason code) as a typed Dagster table, largest first."""
    frame = pl.DataFrame(
        {key: list(counts), "rows": list(counts.values())}, schema={key: pl.Utf8, "rows": pl.Int64}
    ).sort("rows", descending=True)
    if total:
        frame = frame.with_columns((pl.col("rows") / total * 100).round(2).alias("% of records"))
    return preview_table(frame, max_rows=50)


def png_markdown(path, alt: str = "plot") -> dg.MetadataValue:
    """A PNG inlined into a markdown metadata entry, so the UI shows the picture itself."""
    import base64
    from pathlib import Path

    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{data})")


def _type_name(dtype: pl.DataType) -> str:
    return str(dtype)


def column_schema(schema: pl.Schema | dict, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    """A `TableSchema` from a polars schema (the contracts in `pipeline/schema.py`), for `dagster/column_schema`."""
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=name, type=_type_name(dtype), description=descriptions.get(name))
            for name, dtype in dict(schema).items()
        ]
    )


def _cell(value: object, max_chars: int = 120) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    # a cell from the data is shown on one line, with no control, bidi or zero-width character
    s = plain_text(value)
    return s if len(s) <= max_chars else s[: max_chars - 1] + "…"


def preview_table(df: pl.DataFrame, max_rows: int = 5) -> dg.MetadataValue:
    """The first rows as a typed Dagster table (`MetadataValue.table`), long cells cut."""
    head = df.head(max_rows)
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in head.iter_rows(named=True)]
    return dg.MetadataValue.table(
        records=records,
        schema=column_schema(
            {
                name: (dtype if dtype.is_numeric() or dtype == pl.Boolean else pl.Utf8)
                for name, dtype in head.schema.items()
            }
        ),
    )


def table_metadata(df: pl.DataFrame, schema: pl.Schema | dict | None = None, preview_rows: int = 5) -> dict:
    """Row count, column schema (the contract when given, else the frame's) and a typed preview of a table asset."""
    return {
        "dagster/row_count": df.height,
        "dagster/column_schema": column_schema(schema if schema is not None else df.schema),
        "preview": preview_table(df, preview_rows),
    }


def schema_metadata(schema: pl.Schema | dict, **extra: pl.DataType) -> dict:
    """Definition metadata of a table asset: its contract as `dagster/column_schema` (plus `extra` columns)."""
    return {"dagster/column_schema": column_schema({**dict(schema), **extra})}
