"""The label guard caps free-form values and makes them exposition-safe."""

from __future__ import annotations

import pytest

from taskforce.observability.metrics._guard import (
    MAX_VALUE_LENGTH,
    LabelGuard,
    escape_label_value,
    normalize_label_value,
    unescape_label_value,
)

HOSTILE = [
    'a"quote',
    "back\\slash",
    "new\nline",
    'all \\" of\n them \\n',
    "ünïcødé €😀",
    "",
    "other-ish",
]


class TestEscaping:
    @pytest.mark.parametrize("raw", HOSTILE)
    def test_round_trip(self, raw: str) -> None:
        """unescape(escape(v)) == v for hostile values."""
        assert raw == unescape_label_value(escape_label_value(raw))

    def test_escapes_the_three_specials(self) -> None:
        """Backslash, double quote and newline get the text format's escapes."""
        assert 'a\\\\b\\"c\\nd' == escape_label_value('a\\b"c\nd')

    def test_escaped_value_has_no_raw_specials(self) -> None:
        """An escaped value has no newline and every quote is preceded by a backslash."""
        escaped = escape_label_value('x"\n\\"')
        assert "\n" not in escaped
        assert escaped.count('"') == escaped.count('\\"')

    def test_rejects_unknown_escape(self) -> None:
        """Only \\\\, \\" and \\n are escapes."""
        with pytest.raises(ValueError, match="escape"):
            unescape_label_value("a\\tb")


class TestNormalize:
    def test_stringifies(self) -> None:
        """200 and "200" are the same value."""
        assert normalize_label_value("200") == normalize_label_value(200)

    def test_truncates_deterministically(self) -> None:
        """A 10,000-character value keeps its first MAX_VALUE_LENGTH characters."""
        long_value = "x" * 5000 + "y" * 5000
        assert "x" * MAX_VALUE_LENGTH == normalize_label_value(long_value)
        assert normalize_label_value(long_value) == normalize_label_value(long_value + "z")

    def test_truncates_before_escaping(self) -> None:
        """Escaping a cut value never splits an escape sequence."""
        value = '"' * 1000
        assert '\\"' * MAX_VALUE_LENGTH == normalize_label_value(value)

    def test_keeps_non_ascii(self) -> None:
        """Non-ASCII text survives unchanged and encodes as UTF-8."""
        assert "ünïcødé €😀" == normalize_label_value("ünïcødé €😀")

    def test_lone_surrogate_becomes_encodable(self) -> None:
        """A lone surrogate cannot be UTF-8; it is replaced so the scrape encodes."""
        result = normalize_label_value("bad\ud800x")
        assert "bad?x" == result
        result.encode("utf-8")


class TestLabelGuard:
    def test_admits_up_to_cap_then_other(self) -> None:
        """The (cap+1)-th distinct value becomes 'other' and is reported once per call."""
        overflows: list[tuple[str, str]] = []
        guard = LabelGuard(2, lambda m, label: overflows.append((m, label)))
        assert "a" == guard.admit("m", "tool_name", "a")
        assert "b" == guard.admit("m", "tool_name", "b")
        assert "other" == guard.admit("m", "tool_name", "c")
        assert "other" == guard.admit("m", "tool_name", "d")
        assert "a" == guard.admit("m", "tool_name", "a")
        assert [("m", "tool_name"), ("m", "tool_name")] == overflows
        assert frozenset({"a", "b"}) == guard.admitted("m", "tool_name")

    def test_cap_is_per_metric_and_label(self) -> None:
        """Each (metric, label) pair has its own slots."""
        guard = LabelGuard(1)
        assert "a" == guard.admit("m1", "tool_name", "a")
        assert "b" == guard.admit("m2", "tool_name", "b")
        assert "c" == guard.admit("m1", "error_type", "c")
        assert "other" == guard.admit("m1", "tool_name", "b")

    def test_other_takes_no_slot(self) -> None:
        """A literal 'other' is always admitted and does not use up the cap."""
        guard = LabelGuard(1)
        assert "other" == guard.admit("m", "model", "other")
        assert "gpt" == guard.admit("m", "model", "gpt")

    def test_int_and_str_share_a_slot(self) -> None:
        """{"code": 200} and {"code": "200"} are one value."""
        guard = LabelGuard(1)
        assert "200" == guard.admit("m", "status_code", 200)
        assert "200" == guard.admit("m", "status_code", "200")

    def test_equal_keys_of_other_types_are_not_conflated(self) -> None:
        """True, 1 and 1.0 hash alike but are different label values."""
        guard = LabelGuard(10)
        assert "1" == guard.admit("m", "l", "1")
        assert "True" == guard.admit("m", "l", True)
        assert "1.0" == guard.admit("m", "l", 1.0)

    def test_long_values_sharing_a_prefix_are_one_value(self) -> None:
        """Values that differ only after the cut take one slot."""
        guard = LabelGuard(1)
        prefix = "p" * MAX_VALUE_LENGTH
        assert guard.admit("m", "l", prefix + "1") == guard.admit("m", "l", prefix + "2")

    def test_hostile_values_are_escaped(self) -> None:
        """What the guard returns is the escaped form."""
        guard = LabelGuard(len(HOSTILE))
        for raw in HOSTILE:
            assert escape_label_value(raw) == guard.admit("m", "l", raw)

    def test_thousands_of_values_stay_bounded(self) -> None:
        """Ten thousand distinct values admit only the cap; the memo stays bounded."""
        guard = LabelGuard(5)
        results = {guard.admit("m", "l", f'v"{i}\n' * 3) for i in range(10_000)}
        assert 6 == len(results)
        assert 5 == len(guard.admitted("m", "l"))
        assert len(guard._states[("m", "l")].memo) <= 4 * 5 + 64

    def test_rejects_cap_below_one(self) -> None:
        """max_label_values must be at least 1."""
        with pytest.raises(ValueError, match="max_label_values"):
            LabelGuard(0)
