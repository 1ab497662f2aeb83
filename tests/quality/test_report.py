from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from quality.contracts import check_ingest_conservation, check_stage_conservation
from quality.drift import psi_categorical
from quality.outcomes import CheckOutcome, ExpectationOutcome, SuiteResult
from quality.report import build_html, build_markdown, write_report
from quality.report_inputs import ReportInputs, StageCount

SECTIONS = ("checks", "flow", "quarantine", "pii", "dups", "clusters", "drift")
EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I
)


def _suite(table: str, *, fail: bool) -> SuiteResult:
    outcomes = [
        ExpectationOutcome("expect_column_values_to_not_be_null", "text", True),
        ExpectationOutcome(
            "expect_column_values_to_be_in_set",
            "role",
            not fail,
            examples=[{"id": "m1", "value": "bot<script>"}],
            unexpected_count=1 if fail else 0,
            unexpected_percent=0.5 if fail else 0.0,
            description="known roles",
        ),
    ]
    return SuiteResult.from_outcomes(table, outcomes, rows=200)


@pytest.fixture()
def inputs() -> ReportInputs:
    rng = np.random.default_rng(3)
    shares_prev = {f"{i}: topic {i}": s for i, s in enumerate(rng.dirichlet(np.ones(18)))}
    shares_now = {f"{i}: topic {i}": s for i, s in enumerate(rng.dirichlet(np.ones(18)))}
    return ReportInputs(
        day=date(2024, 5, 1),
        stages=[
            StageCount("ingest", 1000, 970, {"invalid_json": 20, "empty_text": 10}),
            StageCount("pii", 970, 970),
            StageCount("exact_dedup", 970, 940, {"exact_duplicate": 30}),
            StageCount("prompts", 940, 400),
        ],
        records_read=1000,
        quarantine_reasons={"invalid_json": 20, "empty_text": 10},
        pii_counts={"email": 12, "phone": 4},
        dup_rates={"exact": 0.031, "near": 0.012, "semantic": 0.004},
        cluster_shares=shares_now,
        previous_cluster_shares=shares_prev,
        text_lengths=rng.lognormal(4, 1, 3000).round(),
        previous_text_lengths=rng.lognormal(4, 1, 3000).round(),
        checks=[
            _suite("conversations", fail=True),
            _suite("prompts", fail=False),
            check_ingest_conservation(1000, 970, 30),
            check_stage_conservation("exact_dedup", rows_in=970, rows_out=940, rows_dropped=30),
            CheckOutcome("text_length_drift", False, "PSI 0.31", severity="warning"),
        ],
    )


def test_report_has_every_section_and_no_external_resources(inputs):
    html = build_html(inputs)
    for section in SECTIONS:
        assert f'id="{section}"' in html
    assert not EXTERNAL.search(html)
    assert "http://" not in html and "https://" not in html
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(images) >= 6 and all(src.startswith("data:image/png;base64,") for src in images)
    # values from the data are escaped, never interpreted
    assert "bot<script>" not in html and "bot&lt;script&gt;" in html
    assert "Not available" not in html and "Incomplete" not in html
    assert ">fail<" in html  # overall status, a critical check failed
    for text in ("invalid_json", "exact_dedup", "email", "semantic", "0: topic 0", "Text length", "PSI part"):
        assert text in html


def test_missing_inputs_are_announced():
    html = build_html(ReportInputs(day="2024-05-02"))
    assert html.count("Not available for this day") >= 7
    assert "Incomplete" in html and ">unknown<" in html
    md = build_markdown(ReportInputs(day="2024-05-02"))
    assert "UNKNOWN" in md and "Not available yet" in md and "pipeline stages" in md


def test_partial_inputs(inputs):
    partial = ReportInputs(day=inputs.day, dup_rates={"exact": 0.02}, quarantine_reasons={}, checks=inputs.checks[2:4])
    html = build_html(partial)
    assert "No record was quarantined" in html
    assert "not run" in html  # near/semantic dedup absent
    assert ">pass<" in html


def test_markdown_summary(inputs):
    md = build_markdown(inputs)
    assert md.startswith("### Data quality 2024-05-01: **FAIL**")
    assert "conversations_expectations" in md and "text_length_drift" in md
    assert "prompts_expectations" not in md  # only failing checks are listed
    assert "| exact_dedup | 970 | 940 | 30 |" in md
    assert "data:image" not in md


def test_drift_is_computed_from_raw_inputs(inputs):
    html = build_html(inputs)
    expected = psi_categorical(inputs.previous_cluster_shares, inputs.cluster_shares).psi
    assert f"{expected:.3f}" in html


def test_write_report(tmp_path: Path, inputs):
    folder = tmp_path / "reports" / "quality" / "2024-05-01"
    files = write_report(inputs, folder)
    assert files.index == folder / "index.html" and files.index.read_text().startswith("<!doctype html>")
    assert set(files.suite_pages) == {"conversations", "prompts"}
    page = files.suite_pages["conversations"].read_text()
    assert "expect_column_values_to_be_in_set" in page and "bot&lt;script&gt;" in page
    assert not EXTERNAL.search(page)
    assert 'href="conversations.html"' in files.index.read_text()
    assert files.summary.read_text() == files.markdown
    assert sorted(p.name for p in folder.iterdir()) == [
        "conversations.html",
        "index.html",
        "prompts.html",
        "summary.md",
    ]


def test_bad_inputs_fail_fast():
    with pytest.raises(ValueError, match="dup_rates"):
        ReportInputs(day="2024-05-01", dup_rates={"exact": 3.0})
    with pytest.raises(ValueError, match="pii_counts"):
        ReportInputs(day="2024-05-01", pii_counts={"email": -1})


def _screenshot(chromium: str, html: Path, png: Path, profile: Path) -> Path:
    """`html` rendered to `png` by headless Chromium, offline (network features off, a throwaway profile)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
    cmd = [chromium, *flags, f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1000,1200"]
    proc = subprocess.run([*cmd, html.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert png.exists(), f"chromium produced no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}"
    return png


def test_screenshot_renders_the_page(tmp_path, inputs):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium installed: the report screenshot is optional")
    files = write_report(inputs, tmp_path)
    png = _screenshot(chromium, files.index, tmp_path / "shot.png", tmp_path / "profile")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a rendered page, not a blank canvas


def test_numpy_counts_render_as_integers():
    html = build_html(ReportInputs(day="2024-05-01", stages=[StageCount("ingest", np.int64(12345), np.int64(12000))]))
    assert "12,345" in html and "e+04" not in html


def test_unread_files_are_listed_with_their_reason(inputs):
    inputs.unread_files = [
        ("day=2024-05-01/table.csv", "unsupported_file", "not a file the folder source reads"),
        ("day=2024-05-01/link.jsonl", "outside_source", "a symbolic link outside the source folder"),
    ]
    html = build_html(inputs)
    section = html[html.index('id="unread-files"') :]
    for file, reason, detail in inputs.unread_files:
        assert file in section and reason in section and detail in section
    markdown = build_markdown(inputs)
    assert "Files not read" in markdown and "| day=2024-05-01/table.csv | unsupported_file |" in markdown


def test_no_unread_files_no_section(inputs):
    assert 'id="unread-files"' not in build_html(inputs)
    assert "Files not read" not in build_markdown(inputs)
