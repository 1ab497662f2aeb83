from __future__ import annotations

import pytest

from evaluation.gate_config import GateConfig


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"win_rate_warn": 0.7}, "win_rate_warn"),
        ({"slices": ("eval_user",)}, "slices"),
        ({"slice_divergence_max": 2}, "slice_divergence_max"),
        ({"artifact_bands": {"mean_chars": ("percent", 0.1)}}, "artifact_bands"),
        ({"max_train_eval_overlap": -1}, "max_train_eval_overlap"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GateConfig(**kwargs)
