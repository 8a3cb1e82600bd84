"""The executor port's mission check: what counts as a mission with something in it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from taskforce.core.interfaces.executor import check_mission_request, has_visible_character
from taskforce.errors import MissionError
from tests.support.odd_values import HugeRepr, Unrepresentable, UnrepresentableText

INVISIBLE = [
    "",
    " \n\t ",
    "\u200b",  # zero-width space (Cf)
    "\ufeff",  # byte order mark (Cf)
    "\x00",  # NUL (Cc)
    "\x07\x1b\x7f",  # other controls (Cc)
    " \u200b\t\ufeff\x00\u2060\u00a0\u3000 ",  # formats and spaces mixed
    "\u2028\u2029",  # line and paragraph separators
    "\u3164\u034f\ufe0f",  # Hangul filler, grapheme joiner, variation selector
]


class TestHasVisibleCharacter:
    @pytest.mark.parametrize("text", INVISIBLE)
    def test_invisible_text_is_blank(self, text: str) -> None:
        """Whitespace, controls, formats and other ignorable characters draw nothing."""
        assert not has_visible_character(text)

    @pytest.mark.parametrize("text", ["x", "\u200bhi\ufeff", "\x00.", " \u00e9 ", "\U0001f600"])
    def test_one_visible_character_is_enough(self, text: str) -> None:
        """A text with one character that draws something is not blank."""
        assert has_visible_character(text)


class TestCheckMissionRequest:
    @pytest.mark.parametrize("mission", INVISIBLE)
    def test_a_mission_with_nothing_visible_is_refused(self, mission: str) -> None:
        """A mission of invisible characters only is refused like a blank one, with a reason."""
        with pytest.raises(MissionError, match="mission must be a non-empty string with a visible"):
            check_mission_request(mission)

    def test_a_visible_mission_is_kept_as_it_is(self) -> None:
        """A mission with visible text keeps its invisible characters: nothing is stripped."""
        mission = "\ufeff\u200b say hi\x00 \n"
        assert mission == check_mission_request(mission).mission


#: Values a Python caller may hand the check that fail, or take long, when shown; made in
#: the test (pytest itself would read the ``__class__`` that fails).
_HOSTILE: dict[str, Callable[[], Any]] = {
    "repr-and-class-fail": Unrepresentable,
    "text-whose-methods-fail": lambda: UnrepresentableText(" "),
    "huge-repr": HugeRepr,
    "int-past-digits": lambda: 10**5000,
    "list-of-huge-reprs": lambda: [HugeRepr()] * 3,
}


class TestRefusedValuesAreShownSafely:
    @pytest.mark.parametrize(
        ("field", "call"),
        [
            ("mission", lambda value: check_mission_request(value)),
            ("agent_type", lambda value: check_mission_request("hi", value)),
            ("session_id", lambda value: check_mission_request("hi", "lean", value)),
            ("mission_id", lambda value: check_mission_request("hi", "lean", None, value)),
        ],
    )
    @pytest.mark.parametrize("value", list(_HOSTILE))
    def test_a_value_whose_repr_fails_or_is_huge(
        self, field: str, call: Callable[[Any], Any], value: str
    ) -> None:
        """Each refusal is a MissionError naming the field, short, whatever the value's repr
        does: none of the value's own code runs, so its own exception never gets out."""
        HugeRepr.calls = 0
        with pytest.raises(MissionError) as info:
            call(_HOSTILE[value]())
        message = str(info.value)
        assert message.startswith("unknown agent_type" if field == "agent_type" else field)
        assert len(message) < 200
        assert 0 == HugeRepr.calls

    def test_a_hostile_value_is_named_by_its_type(self) -> None:
        """What the message shows of a value of its own type, a huge int, a long list."""
        shown = {
            "<Unrepresentable object>": Unrepresentable(),
            "<int of 16610 bits>": 10**5000,
            "<list of 1000000 items>": [0] * 1_000_000,
        }
        for expected, value in shown.items():
            with pytest.raises(MissionError, match=f"got {re.escape(expected)}$"):
                check_mission_request("hi", "lean", value)

    def test_a_text_of_its_own_type_is_checked_as_plain_text(self) -> None:
        """A str subclass is read as the text it holds, not through its own methods: a blank
        one is refused with its text quoted, a visible one runs as plain text."""
        with pytest.raises(MissionError, match=r"got ' '$"):
            check_mission_request(UnrepresentableText(" "))
        request = check_mission_request(UnrepresentableText("say hi"))
        assert ("say hi", str) == (request.mission, type(request.mission))
