import pytest

from engine.style import StyleGuards, count_emoji, has_list, style_features


def test_count_emoji_counts_grapheme_clusters_not_symbols():
    assert count_emoji("plain text") == 0
    assert count_emoji("pizza 🍕🍕") == 2
    # a family (joined by zero-width joiners) and a flag are one emoji each
    assert count_emoji("👨‍👩‍👧 and 🇫🇷") == 2
    # text-style symbols are not emoji unless the emoji variation selector asks for it
    assert count_emoji("© ™ ❤") == 0
    assert count_emoji("❤️") == 1


def test_has_list_needs_two_marked_lines():
    assert has_list("Options:\n- tea\n- coffee")
    assert has_list("1. wake up\n2) eat")
    assert not has_list("- only one line")
    assert not has_list("a - b - c on one line")


def test_style_features():
    assert style_features("hi 😀") == {"n_chars": 4, "n_emoji": 1, "has_list": False}
    assert style_features(None)["n_chars"] == 0


def test_style_guards_reasons_in_order():
    g = StyleGuards(min_chars=3, max_chars=10, max_emoji=1, allow_lists=False)
    assert g.reason("") == "empty_response"
    assert g.reason("ab") == "too_short"
    assert g.reason("x" * 11) == "too_long"
    assert g.reason("ok 😀😀") == "too_many_emoji"
    assert g.reason("- a\n- b") == "list_format"
    assert g.reason("call 555", pii_check=lambda t: "555" in t) == "pii"
    assert g.reason("fine", pii_check=lambda t: False) is None


def test_style_guards_validate():
    with pytest.raises(ValueError, match="min_chars"):
        StyleGuards(min_chars=5, max_chars=2)
    with pytest.raises(ValueError, match="max_emoji"):
        StyleGuards(max_emoji=-1)
