from __future__ import annotations

import pytest

from engine.rules import check_instruction


@pytest.mark.parametrize(
    "spec, text, expected",
    [
        ({"type": "max_words", "limit": 3}, "one two — three...", True),
        ({"type": "max_words", "limit": 3}, "one two three four", False),
        ({"type": "max_chars", "limit": 5}, "  abcde \n", True),
        ({"type": "max_chars", "limit": 5}, "abcdef", False),
        ({"type": "no_emoji"}, "plain text :) ©", True),
        ({"type": "no_emoji"}, "thumbs 👍🏽", False),
        ({"type": "language", "code": "fr"}, "Bonjour, je suis très content de vous voir aujourd'hui.", True),
        ({"type": "language", "code": "fr"}, "Hello, I am very happy to see you today, my friend.", False),
        ({"type": "language", "code": "ja"}, "ようこそ、お茶室へ。今日はどんなお茶を飲みたいですか。", True),
        ({"type": "language", "code": "fr"}, "12345 !!!", False),
        ({"type": "case", "mode": "lower"}, "all lower, 123 ok?", True),
        ({"type": "case", "mode": "lower"}, "i met Alice", False),
        ({"type": "case", "mode": "upper"}, "SYSTEMS NOMINAL. 42.", True),
        ({"type": "case", "mode": "upper"}, "SYSTEMS nominal", False),
        ({"type": "end_with_question"}, 'What next? 🙂"', True),
        ({"type": "end_with_question"}, "Is it? No. Fine.", False),
        ({"type": "end_with_question"}, "Ready？", True),
        ({"type": "forbidden_words", "words": ["beer", "wine"]}, "Try some BEERS tonight", False),
        ({"type": "forbidden_words", "words": ["beer", "wine"]}, "Beethoven liked swine and beery songs", True),
        ({"type": "keep_name", "name": "Luna"}, "My name is Luna, not Stella. Sleep well?", True),
        ({"type": "keep_name", "name": "Luna"}, "You can call me Stella.", False),
        ({"type": "keep_name", "name": "Luna"}, "Honestly, I'm ChatGPT.", False),
        ({"type": "keep_name", "name": "Luna"}, "Luna is just a persona I play.", False),
        ({"type": "keep_name", "name": "Luna"}, "I’m not Luna.", False),
        ({"type": "sign_with_name", "name": "Ray"}, "Do ten more.\n\nCheers, Ray!", True),
        ({"type": "sign_with_name", "name": "Ada"}, "Bienvenidos.\n— Ada 🚀", True),
        ({"type": "sign_with_name", "name": "Ray"}, "Ray says do ten more.", False),
    ],
)
def test_checkers(spec, text, expected):
    passed, detail = check_instruction(spec, text)
    assert passed is expected, detail


def test_language_verdict_is_deterministic():
    text = "Ciao"  # short and ambiguous: an unseeded detector may flip between runs
    verdicts = {check_instruction({"type": "language", "code": "it"}, text)[0] for _ in range(10)}
    assert len(verdicts) == 1
