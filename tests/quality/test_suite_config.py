from __future__ import annotations

import pytest

from quality.suite_config import SuiteConfig


def test_bad_config_names_the_setting():
    with pytest.raises(ValueError, match="message_len_bands"):
        SuiteConfig(message_len_bands=((0.5, 10.0, 1.0),))
    with pytest.raises(ValueError, match="distribution_severity"):
        SuiteConfig(distribution_severity="fatal")
    with pytest.raises(ValueError, match="max_null_rate"):
        SuiteConfig(max_null_rate={"served_response": 0.1})


def test_every_setting_has_help_and_an_offline_default():
    from dataclasses import fields

    cfg = SuiteConfig()
    for f in fields(SuiteConfig):
        assert f.metadata.get("help"), f"{f.name} has no help string"
        assert getattr(cfg, f.name) is not None


def test_quarantine_codes_default_to_the_ingest_codes():
    ingest = pytest.importorskip("pipeline.ingest")
    assert SuiteConfig().quarantine_reason_codes == tuple(ingest.REASON_CODES)
