"""Running Great Expectations suites on polars frames, offline and cheaply.

GX has no polars source, so a frame is handed over as pandas with Arrow-backed columns (no copy of
string or list buffers). One ephemeral context per process is built on first use and reused: GX
takes seconds to import and set up, while a validation of a day's table takes milliseconds.
Analytics and progress bars are switched off in the context itself, so nothing phones home and
logs stay readable. GX objects are not documented as thread-safe, so validations are serialized.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from pipeline.privacy import scrub_text
from pipeline.privacy_config import PrivacyConfig
from quality.outcomes import CRITICAL, ExpectationOutcome, json_safe

if TYPE_CHECKING:  # pragma: no cover
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.datasource.fluent import PandasDatasource

DATASOURCE = "flywheel"
BATCH_DEFINITION = "whole_frame"

_LOCK = threading.RLock()


@dataclass
class _Runtime:
    context: AbstractDataContext
    datasource: PandasDatasource
    batch_definitions: dict[str, Any]


_RUNTIME: _Runtime | None = None


def expectations_module():
    """`great_expectations.expectations`, imported on first use (GX is slow to import)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations.expectations as gxe

    return gxe


def runtime() -> _Runtime:
    """The process-wide ephemeral GX context with one pandas data source (built once)."""
    global _RUNTIME
    with _LOCK:
        if _RUNTIME is None:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            import great_expectations as gx
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            config = DataContextConfig(
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
                store_backend_defaults=InMemoryStoreBackendDefaults(),
            )
            context = gx.get_context(mode="ephemeral", project_config=config)
            datasource = context.data_sources.add_pandas(name=DATASOURCE)
            _RUNTIME = _Runtime(context, datasource, {})
        return _RUNTIME


def _batch_definition(asset_name: str):
    rt = runtime()
    bd = rt.batch_definitions.get(asset_name)
    if bd is None:
        asset = rt.datasource.add_dataframe_asset(name=asset_name)
        bd = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
        rt.batch_definitions[asset_name] = bd
    return bd


def to_pandas(df: pl.DataFrame):
    """Arrow-backed pandas view of `df` (strings and lists are not copied into Python objects)."""
    return df.to_pandas(use_pyarrow_extension_array=True)


def _exception_message(info: Any) -> str | None:
    # GX reports either one {raised_exception, exception_message} dict or a dict of them per metric
    if not isinstance(info, dict) or not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for sub in info.values():
        msg = _exception_message(sub)
        if msg:
            return msg
    return None


_HIDDEN_PARAMS = {"batch_id", "column", "column_list", "result_format", "catch_exceptions", "meta"}


_PRIVACY = PrivacyConfig()
# scrubbing sees this much beyond the cut, so a PII item the cut splits is still recognised
_SCRUB_MARGIN = 256


def _shown(value: Any, max_chars: int) -> Any:
    """A failing value as metadata and reports keep it: strings scrubbed of PII, then cut. A table that fails
    its suite may hold what should not be there (raw text, an email in a hash column)."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()  # numpy and Arrow arrays and scalars
    if isinstance(value, str):
        text = scrub_text(value[: max_chars + _SCRUB_MARGIN], _PRIVACY)
        if len(value) > max_chars + _SCRUB_MARGIN or len(text) > max_chars:
            return f"{text[:max_chars]}… ({len(value)} chars)"
        return text
    if isinstance(value, dict):
        return {str(k): _shown(v, max_chars) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown(v, max_chars) for v in value]
    return json_safe(value, max_chars)


def _examples(result: dict[str, Any], ids: pl.Series | None, limit: int, max_chars: int) -> list[Any]:
    values = result.get("partial_unexpected_list") or []
    index = result.get("partial_unexpected_index_list") or []
    out: list[Any] = []
    for i, value in enumerate(values[:limit]):
        value = _shown(value, max_chars)
        if ids is not None and i < len(index) and isinstance(index[i], int) and 0 <= index[i] < len(ids):
            out.append({"id": json_safe(ids[index[i]], max_chars), "value": value})
        else:
            out.append(value)
    return out


def validate(
    asset_name: str,
    df: pl.DataFrame,
    expectations: list[Any],
    *,
    id_column: str | None = None,
    example_count: int = 5,
    max_example_chars: int = 160,
) -> list[ExpectationOutcome]:
    """Validate `df` against `expectations` (GX Expectation objects); one outcome per expectation, in order."""
    if not expectations:
        return []
    import great_expectations as gx

    for i, expectation in enumerate(expectations):
        expectation.meta = {**(expectation.meta or {}), "order": i}
    with _LOCK:
        suite = gx.ExpectationSuite(name=f"{asset_name}_suite", expectations=expectations)
        batch = _batch_definition(asset_name).get_batch(batch_parameters={"dataframe": to_pandas(df)})
        result = batch.validate(
            suite,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": max(example_count, 1)},
        )
    ids = df[id_column] if id_column and id_column in df.columns else None
    outcomes: list[tuple[int, ExpectationOutcome]] = []
    for r in result.results:
        config = r.expectation_config
        kwargs = dict(config.kwargs)
        meta = dict(config.meta or {})
        res = dict(r.result or {})
        column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
        severity = getattr(config, "severity", None) or CRITICAL
        outcome = ExpectationOutcome(
            name=config.type,
            column=column,
            success=bool(r.success),
            severity=getattr(severity, "value", str(severity)),
            description=str(meta.get("why", "")),
            observed=json_safe(res.get("observed_value"), max_example_chars),
            element_count=res.get("element_count"),
            unexpected_count=res.get("unexpected_count"),
            unexpected_percent=res.get("unexpected_percent"),
            examples=[] if r.success else _examples(res, ids, example_count, max_example_chars),
            params={k: json_safe(v, 80) for k, v in kwargs.items() if k not in _HIDDEN_PARAMS and v is not None},
            error=_exception_message(r.exception_info),
        )
        outcomes.append((int(meta.get("order", len(outcomes))), outcome))
    return [o for _, o in sorted(outcomes, key=lambda t: t[0])]
