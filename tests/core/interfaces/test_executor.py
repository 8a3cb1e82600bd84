"""The executor port's mission check: what counts as a mission with something in it."""

from __future__ import annotations

import pytest

from taskforce.core.interfaces.executor import check_mission_request, has_visible_character
from taskforce.errors import MissionError

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
