"""The suite's log walker (tests/support/log_audit.py) catches what it is meant to catch."""

from __future__ import annotations

import pytest

from tests.support.log_audit import check_event, documented_levels

DOCUMENTED = documented_levels()


class TestDocumentedLevels:
    def test_rows_pair_events_and_levels(self) -> None:
        """Each event gets its own documented level; one event with two levels may use both."""
        assert frozenset({"error"}) == DOCUMENTED["mission.failed"]
        assert frozenset({"warning"}) == DOCUMENTED["mission.cancelled"]
        assert frozenset({"info", "warning"}) == DOCUMENTED["agent.finished"]
        assert frozenset({"debug"}) == DOCUMENTED["tool.call.started"]


class TestCheckEvent:
    def test_documented_event_at_its_level_passes(self) -> None:
        """An event at its documented level with ids, numbers and digests is fine."""
        event = {
            "event": "mission.failed",
            "category": "mission",
            "mission_id": "m1",
            "steps": 2,
            "error_chars": 12,
            "error_sha256": "0123456789abcdef",
        }
        assert [] == check_event("error", event, DOCUMENTED)

    def test_wrong_level_is_reported(self) -> None:
        """mission.failed at warning is caught (the docs say error)."""
        problems = check_event("warning", {"event": "mission.failed"}, DOCUMENTED)
        assert ["mission.failed logged at warning, documented at error"] == problems

    @pytest.mark.parametrize(
        ("event", "field"),
        [
            ({"event": "tool.call.failed", "category": "tool", "error": "x"}, "error"),
            ({"event": "tool.path.refused", "category": "security", "path": "../x"}, "path"),
            ({"event": "agent.parse.failed", "category": "agent", "reason": "bad"}, "reason"),
            ({"event": "mission.started", "category": "mission", "mission": "do"}, "mission"),
            ({"event": "tool.call.completed", "category": "tool", "args": {"a": 1}}, "args"),
        ],
    )
    def test_free_text_at_info_or_above_is_reported(
        self, event: dict[str, object], field: str
    ) -> None:
        """Free text in a content category at warning is caught, at debug it is not."""
        assert [repr(field)] == [
            p.split(" in ")[1].split(":")[0] for p in check_event("warning", event, {})
        ]
        assert [] == check_event("debug", event, {})

    def test_other_categories_may_carry_text(self) -> None:
        """State and lifecycle lines may carry server paths and exception text."""
        event = {"event": "state.save.failed", "category": "state", "error": "/srv/x: EIO"}
        assert [] == check_event("error", event, DOCUMENTED)
