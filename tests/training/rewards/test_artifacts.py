from __future__ import annotations

from training.rewards.artifacts import ARTIFACTS


def test_artifact_transforms_keep_the_response():
    text = "I like tea. It is warm."
    for name, fn in ARTIFACTS.items():
        out = fn(text)
        assert out != text, name
        assert "tea" in out and "warm" in out, name
    assert ARTIFACTS["markdown_list"](text).count("\n- ") == 2
    assert ARTIFACTS["exclamation"](text).endswith("!!")
