from __future__ import annotations

import polars as pl

from quality import gx_engine


def test_one_context_per_process_without_analytics(gx_runtime):
    assert gx_engine.runtime() is gx_runtime
    assert gx_runtime.context.config.analytics_enabled is False
    assert gx_runtime.context.variables.progress_bars.globally is False


def test_validate_keeps_order_and_maps_ids(gx_runtime):
    x = gx_engine.expectations_module()
    df = pl.DataFrame({"id": ["a", "b", "c"], "n": [1, 50, 3]})
    exps = [
        x.ExpectColumnValuesToBeBetween(column="n", max_value=10),
        x.ExpectColumnValuesToNotBeNull(column="id"),
        x.ExpectColumnValuesToNotBeNull(column="missing"),
    ]
    out = gx_engine.validate("engine_test", df, exps, id_column="id")
    assert [(o.column, o.success) for o in out] == [("n", False), ("id", True), ("missing", False)]
    assert out[0].examples == [{"id": "b", "value": 50}]
    assert out[2].error and "missing" in out[2].error
    # the asset is reused on the next call
    assert gx_engine.validate("engine_test", df, exps[:1])[0].unexpected_count == 1


def test_pandas_view_is_arrow_backed():
    pdf = gx_engine.to_pandas(pl.DataFrame({"s": ["x"], "l": [[1, 2]]}))
    assert all("pyarrow" in str(t) for t in pdf.dtypes)
