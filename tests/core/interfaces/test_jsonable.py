"""jsonable: a tool's output, whatever it holds, can be written as JSON."""

from __future__ import annotations

import json
from typing import Any

from taskforce.core.interfaces.jsonable import as_text, jsonable
from tests.support.odd_values import Unprintable


class TestJsonable:
    def test_plain_json_is_unchanged(self) -> None:
        """What JSON holds already comes back equal (tuples as lists)."""
        value = {"a": [1, 2.5, None, True], "b": {"c": "text"}, 3: (4, 5)}
        assert {"a": [1, 2.5, None, True], "b": {"c": "text"}, 3: [4, 5]} == jsonable(value)

    def test_what_json_cannot_hold_becomes_text(self) -> None:
        """A tuple key, an int past Python's digits and a cycle are written as text."""
        loop: list[Any] = []
        loop.append(loop)
        value = {(1, 2): "pair", "big": 10**5000, "loop": loop, 10**5000: "key"}
        written = json.loads(json.dumps(jsonable(value), default=as_text))
        assert {
            "(1, 2)": "pair",
            "big": "<int that cannot be written>",
            "loop": ["<a cycle>"],
            "<int that cannot be written>": "key",
        } == written

    def test_a_value_seen_twice_is_no_cycle(self) -> None:
        """The same list in two places is written twice, not as a cycle."""
        shared = [1]
        assert {"a": [1], "b": [1]} == jsonable({"a": shared, "b": shared})


class TestAsText:
    def test_unprintable_objects_get_a_placeholder(self) -> None:
        """str() raising gives a placeholder naming the type."""
        assert "<Unprintable that cannot be written>" == as_text(Unprintable())
        assert "x" == as_text("x")
