from __future__ import annotations

from quality import chromium
from quality.chromium import screenshot


def test_screenshot_returns_none_without_chromium(tmp_path, monkeypatch):
    monkeypatch.setattr(chromium, "find_chromium", lambda: None)
    assert screenshot(tmp_path / "x.html", tmp_path / "x.png") is None
