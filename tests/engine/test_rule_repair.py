"""A change of form brings a reply to keep the rules of form, and leaves every other rule to the policy."""

import pytest

from engine.rule_repair import REPAIRABLE, repair_reply, strip_emoji
from engine.rules import check_instruction

LOWER = {"type": "case", "mode": "lower"}
UPPER = {"type": "case", "mode": "upper"}
SIGN = {"type": "sign_with_name", "name": "Vega"}
NO_EMOJI = {"type": "no_emoji"}
QUESTION = {"type": "end_with_question"}


def kept(spec: dict, text: str) -> bool:
    return check_instruction(spec, text)[0]


@pytest.mark.parametrize(
    ("specs", "text", "want"),
    [
        ([LOWER], "Hello There, Friend!", "hello there, friend!"),
        ([UPPER], "Hello there", "HELLO THERE"),
        ([SIGN], "See you soon!  ", "See you soon!\n— Vega"),
        ([NO_EMOJI], "Great 🎉 day 👋🏽 indeed", "Great day indeed"),
        # the signature is added before the case changes, so a card asking for capitals gets it in capitals
        ([UPPER, SIGN], "Stars are out", "STARS ARE OUT\n— VEGA"),
    ],
)
def test_each_rule_of_form_is_kept_after_repair(specs, text, want):
    fixed = repair_reply(specs, text)
    assert fixed == want
    assert all(kept(s, fixed) for s in specs)
    assert not all(kept(s, text) for s in specs)


def test_a_reply_that_keeps_its_rules_and_the_rules_of_content_are_left_alone():
    keeps = "quiet night, isn't it?\n— vega"
    assert repair_reply([LOWER, SIGN], keeps) == keeps
    # the question ending asks for other words: only the policy can write them
    assert repair_reply([QUESTION, LOWER], "Nice Day.") == "nice day."
    assert not kept(QUESTION, repair_reply([QUESTION], "Nice day."))
    # a rule left out of `rules` is not repaired
    assert repair_reply([LOWER, SIGN], "Hi There", rules=("sign_with_name",)) == "Hi There\n— Vega"


def test_strip_emoji_leaves_no_emoji_and_no_doubled_space():
    text = "Wow 😀😀 so 🇫🇷 nice ❤️\nnext 👍 line"
    out = strip_emoji(text)
    assert kept(NO_EMOJI, out) and out == "Wow so nice\nnext line"


def test_repairable_rules_are_the_rules_of_form():
    assert set(REPAIRABLE) == {"case", "sign_with_name", "no_emoji"}
