"""PII in any script: detection reads NFKC text without format characters and with every script's digits, and
the stored text keeps its own characters outside the replaced spans."""

import polars as pl
import pytest

from pipeline.pii_detectors import luhn_ok
from pipeline.pii_view import TextView
from pipeline.privacy import scrub_frame, scrub_text

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
DEVANAGARI = str.maketrans("0123456789", "०१२३४५६७८९")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call " + "415-555-0132".translate(FULL_WIDTH) + " tonight", "call [PHONE] tonight"),
        ("call " + "415-555-0132".translate(ARABIC_INDIC) + " tonight", "call [PHONE] tonight"),
        ("call " + "+1 415 555 0132".translate(DEVANAGARI) + " tonight", "call [PHONE] tonight"),
        ("card " + "4111 1111 1111 1111".translate(FULL_WIDTH) + " ok", "card [CARD] ok"),
        ("card " + "4111111111111111".translate(ARABIC_INDIC) + " ok", "card [CARD] ok"),
        ("mail alice\u200b.smith@example.com please", "mail [EMAIL] please"),
        ("mail alice.smith＠example.com please", "mail [EMAIL] please"),
        ("mail ａｌｉｃｅ＠ｅｘａｍｐｌｅ．ｃｏｍ please", "mail [EMAIL] please"),
        ("call 415\u200b-555\u2060-0132 now", "call [PHONE] now"),
        # the text keeps its own characters where nothing was found
        ("ｈｅｌｌｏ ٣ cats, café\u200b ok", "ｈｅｌｌｏ ٣ cats, café\u200b ok"),
        ("emoji 😀 and a mail bob@example.org 😀", "emoji 😀 and a mail [EMAIL] 😀"),
        # a phone glued to a number after it (found by the fuzzer), in any script
        ("call me at +1 415 555 0177 0", "call me at [PHONE] 0"),
        ("call me at (415) 555-0163 1", "call me at [PHONE] 1"),
        ("call me at " + "+1 415 555 0177 05".translate(FULL_WIDTH), "call me at [PHONE] ０５"),
        ("4 8 15 16 23 42", "4 8 15 16 23 42"),
    ],
)
def test_pii_in_other_scripts_is_scrubbed_and_the_rest_kept(text, expected):
    assert scrub_text(text) == expected


def test_the_fast_pre_check_lets_every_script_through():
    texts = [
        "call " + "415-555-0132".translate(FULL_WIDTH),
        "call " + "415-555-0132".translate(ARABIC_INDIC),
        "mail alice＠example.com",
        "nothing to see",
    ]
    out, counts = scrub_frame(pl.DataFrame({"text": texts}))
    assert out["text"].to_list() == ["call [PHONE]", "call [PHONE]", "mail [EMAIL]", "nothing to see"]
    assert dict(counts.select("pii_type", "items").iter_rows()) == {
        "URL": 0,
        "EMAIL": 1,
        "IP": 0,
        "CARD": 0,
        "PHONE": 2,
        "HANDLE": 0,
    }


def test_luhn_takes_any_unicode_digit():
    assert luhn_ok("4111111111111111".translate(FULL_WIDTH))
    assert luhn_ok("4111111111111111".translate(ARABIC_INDIC))
    assert not luhn_ok("4111111111111112".translate(FULL_WIDTH))


def test_view_maps_spans_back_to_the_text_as_written():
    text = "a\u200b＠b ٤٢"
    view = TextView(text)
    assert view.view == "a@b 42"
    assert text[slice(*view.span(1, 3))] == "\u200b＠b"[1:]  # the view's "@b" is the text's "＠b"
    assert text[slice(*view.span(4, 6))] == "٤٢"
    ascii_view = TextView("plain")
    assert ascii_view.view == "plain" and ascii_view.span(1, 3) == (1, 3)
