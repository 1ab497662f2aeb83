"""A page rendered to PNG with headless Chromium, offline, when Chromium is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def find_chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(
    html_path: Path | str, png_path: Path | str, *, width: int = 1280, height: int = 2000, timeout_s: float = 120.0
) -> Path | None:
    """Render `html_path` to `png_path` with headless Chromium; None when no Chromium is installed.

    Network features are switched off and a throwaway profile is used, so the render is offline
    and leaves nothing behind. Raises RuntimeError when Chromium runs but produces no image.
    """
    exe = find_chromium()
    if exe is None:
        return None
    html_path, png_path = Path(html_path).resolve(), Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flywheel-chromium-") as profile:
        tmp_png = Path(profile) / "shot.png"
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}/user",
            f"--screenshot={tmp_png}",
            f"--window-size={width},{height}",
            html_path.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if not tmp_png.exists():
            raise RuntimeError(f"chromium produced no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}")
        tmp_out = png_path.with_name(f".{png_path.name}.tmp")
        shutil.copyfile(tmp_png, tmp_out)
        os.replace(tmp_out, png_path)
    return png_path
