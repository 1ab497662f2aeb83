from __future__ import annotations

import pytest

from pipeline.privacy import scrub_text, scrub_text_with_types
from pipeline.privacy_config import PrivacyConfig


def test_config_types_placeholder_and_region() -> None:
    cfg = PrivacyConfig(types=("EMAIL",), placeholder="<{type}>")
    assert scrub_text("a@b.io +1 555 010 2345 @handle", cfg) == "<EMAIL> +1 555 010 2345 @handle"
    text, found = scrub_text_with_types("x a@b.io, c@d.io", cfg)
    assert found == {"EMAIL": 2} and text == "x <EMAIL>, <EMAIL>"
    gb = PrivacyConfig(phone_region="gb")
    assert scrub_text("ring 020 7946 0958", gb) == "ring [PHONE]"
    assert scrub_text("ring 020 7946 0958") == "ring 020 7946 0958"  # not a US number


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"types": ("EMAIL", "SSN")}, "types"),
        ({"placeholder": "[PII]"}, "placeholder"),
        ({"placeholder": "[{type}1]"}, "placeholder"),
        ({"placeholder": "{type} {x}"}, "placeholder"),
        ({"phone_region": "XX"}, "phone_region"),
        ({"url_opaque_min_len": 4}, "url_opaque_min_len"),
    ],
)
def test_bad_config_names_the_setting(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        PrivacyConfig(**kwargs)
