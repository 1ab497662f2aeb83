"""Expectation suites for the lake's tables, built in code, and `validate_table` to run them.

Each table's own expectations live in `quality.tables` (a registry, table name -> `TableSuite`, with the
lake's daily tables) and `quality.training_tables` (the training sets).
Every suite also gets checks common to all tables: the contract's columns and types, required
columns, uniqueness, a row-count floor and, given the previous days' row counts, a band around the
table's usual count (`quality.row_counts`), one day per partition, and salted user hashes.

Contract breaches (types, nulls, value sets, uniqueness, hard length bounds, hashed user ids) are
``critical``: training must not consume the table. Distribution bands and the row-count band
are ``warning`` by default: unusual, worth a look, not proof of a bug.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

from quality import gx_engine
from quality import training_tables as _training_tables  # noqa: F401  registers the training sets' suites
from quality.outcomes import CRITICAL, ExpectationOutcome, SuiteResult, json_safe
from quality.row_counts import row_count_band
from quality.suite_config import SuiteConfig
from quality.tables import REGISTRY, TableSuite, register, why

__all__ = [
    "REGISTRY",
    "ExpectationOutcome",
    "SuiteConfig",
    "SuiteResult",
    "TableSuite",
    "build_expectations",
    "register",
    "validate_table",
]


def _gx_type(dtype: pl.DataType) -> str | None:
    """The GX `type_` that an Arrow-backed pandas column of this polars type reports (its Python scalar type)."""
    if dtype == pl.Utf8:
        return "str"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "bool"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, (pl.List, pl.Array)):
        return "list"
    if isinstance(dtype, pl.Struct):
        return "dict"
    return None


def _row_band(suite: TableSuite, cfg: SuiteConfig, row_history: Sequence[int] | None) -> tuple[int, int, str] | None:
    """(low, high, why) of the row-count band from the previous days' counts."""
    if not suite.counts_traffic:
        return None
    history = list(row_history or ())
    band = row_count_band(history, cfg)
    if band is None:
        return None
    reason = f"row count near the usual of the {len(history)} previous days ({min(history)}..{max(history)} rows)"
    return *band, reason


def _common(
    x: Any,
    suite: TableSuite,
    cfg: SuiteConfig,
    columns: frozenset[str],
    row_history: Sequence[int] | None = None,
) -> list:
    exps: list = []
    if suite.contract is not None:
        exps.append(
            x.ExpectTableColumnsToMatchSet(
                column_set=list(suite.contract.names()),
                exact_match=False,
                meta=why("every contract column is present"),
            )
        )
    typed = {**dict(suite.contract or {}), **{k: v for k, v in suite.optional.items() if k in columns}}
    for col, dtype in typed.items():
        gx_type = _gx_type(dtype)
        if gx_type and col in columns:
            exps.append(x.ExpectColumnValuesToBeOfType(column=col, type_=gx_type, meta=why(f"{col} holds {dtype}")))
    for col in suite.not_null:
        exps.append(x.ExpectColumnValuesToNotBeNull(column=col, meta=why(f"{col} is required")))
    for key, rate in cfg.max_null_rate.items():
        table, col = key.split(".", 1)
        if table == suite.name and col in columns:
            exps.append(
                x.ExpectColumnProportionOfNonNullValuesToBeBetween(
                    column=col,
                    min_value=1.0 - rate,
                    severity=cfg.distribution_severity,
                    meta=why(f"at most {rate:.0%} of {col} is null"),
                )
            )
    for cols in suite.unique:
        if len(cols) == 1:
            exps.append(x.ExpectColumnValuesToBeUnique(column=cols[0], meta=why(f"{cols[0]} is unique")))
        else:
            exps.append(
                x.ExpectCompoundColumnsToBeUnique(column_list=list(cols), meta=why(f"({', '.join(cols)}) is unique"))
            )
    if not suite.may_be_empty and cfg.min_rows > 0:
        exps.append(x.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows, meta=why(f"at least {cfg.min_rows} rows")))
    band = _row_band(suite, cfg, row_history)
    if band is not None:
        low, high, reason = band
        exps.append(
            x.ExpectTableRowCountToBeBetween(
                min_value=low, max_value=high, severity=cfg.row_count_severity, meta=why(reason)
            )
        )
    if "day" in columns:
        exps.append(
            x.ExpectColumnUniqueValueCountToBeBetween(
                column="day", min_value=0, max_value=1, meta=why("one day per partition")
            )
        )
    if cfg.user_hash_pattern and "user_hash" in columns:
        exps.append(
            x.ExpectColumnValuesToMatchRegex(
                column="user_hash", regex=cfg.user_hash_pattern, meta=why("user ids are salted hashes, never raw ids")
            )
        )
    return exps


def build_expectations(
    name: str,
    columns: Iterable[str],
    *,
    row_history: Sequence[int] | None = None,
    config: SuiteConfig | None = None,
) -> list[Any]:
    """The GX expectations of table `name` for a frame with `columns` (after derived columns are added)."""
    if name not in REGISTRY:
        raise ValueError(
            f"no expectation suite for table {name!r}; known tables: {sorted(REGISTRY)} (add one with register())"
        )
    cfg = config or SuiteConfig()
    suite = REGISTRY[name]
    cols = frozenset(columns)
    x = gx_engine.expectations_module()
    exps = _common(x, suite, cfg, cols, row_history)
    if suite.build is not None:
        exps.extend(suite.build(x, cfg, cols))
    return exps


def _contract_outcome(suite: TableSuite, df: pl.DataFrame, cfg: SuiteConfig) -> ExpectationOutcome | None:
    """Exact polars dtypes against the contract: GX sees Python scalar kinds, so it cannot tell Int32 from Int64."""
    if suite.contract is None:
        return None
    wrong = [
        {"column": col, "expected": str(dtype), "observed": str(df.schema[col])}
        for col, dtype in suite.contract.items()
        if col in df.columns and df.schema[col] != dtype
    ]
    return ExpectationOutcome(
        name="expect_exact_contract_dtypes",
        column=None,
        success=not wrong,
        severity=CRITICAL,
        description="every contract column has exactly the contract's dtype (use pipeline.schema.conform)",
        observed=json_safe(wrong) if wrong else "all match",
        examples=json_safe(wrong[: cfg.example_count]),
    )


def validate_table(
    name: str,
    df: pl.DataFrame,
    *,
    row_history: Sequence[int] | None = None,
    config: SuiteConfig | None = None,
) -> SuiteResult:
    """Run table `name`'s suite on `df`. `row_history` (the previous days' row counts, oldest first, e.g.
    `quality.row_counts.row_count_history`) adds a band around the table's usual count."""
    cfg = config or SuiteConfig()
    if name not in REGISTRY:
        raise ValueError(
            f"no expectation suite for table {name!r}; known tables: {sorted(REGISTRY)} (add one with register())"
        )
    suite = REGISTRY[name]
    frame, derive_error = df, None
    if suite.derive is not None:
        try:
            frame = suite.derive(df)
        except Exception as e:  # a malformed frame is a finding to report, not a crash
            derive_error = f"{type(e).__name__}: {e}"
    exps = build_expectations(name, frame.columns, row_history=row_history, config=cfg)
    outcomes = gx_engine.validate(
        name,
        frame,
        exps,
        id_column=suite.id_column,
        example_count=cfg.example_count,
        max_example_chars=cfg.max_example_chars,
    )
    contract = _contract_outcome(suite, df, cfg)
    if contract is not None:
        outcomes.insert(0, contract)
    if derive_error is not None:
        outcomes.insert(
            0,
            ExpectationOutcome(
                name="expect_derived_columns_computable",
                column=None,
                success=False,
                description="lengths and shares can be computed from the frame",
                error=derive_error[: cfg.max_example_chars * 4],
            ),
        )
    return SuiteResult.from_outcomes(name, outcomes, rows=df.height)
