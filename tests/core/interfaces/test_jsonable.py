"""jsonable: a tool's output, whatever it holds, can be written as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskforce.core.interfaces.jsonable import as_text, json_writer, jsonable
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


class TestJsonWriter:
    @pytest.mark.parametrize(
        "value",
        [
            {"a": [1, 2.5, None, True], "b": {"c": "téxt"}, 3: (4, 5)},
            {"x": float("nan"), "y": [float("inf")], 1.5: "key"},
            "text",
        ],
    )
    def test_what_json_holds_is_written_as_json_dumps_writes_it(self, value: Any) -> None:
        """A value json.dumps writes comes out the same, with the encoder's options."""
        assert json.dumps(value) == json_writer()(value)
        compact = json_writer(ensure_ascii=False, separators=(",", ":"))
        assert json.dumps(value, ensure_ascii=False, separators=(",", ":")) == compact(value)

    def test_what_json_cannot_hold_is_written_as_text(self) -> None:
        """A tuple key, an int past Python's digits, a cycle and an unprintable object are
        written as text, the rest kept."""
        loop: list[Any] = []
        loop.append(loop)
        value = {(1, 2): "pair", "big": 10**5000, "loop": loop, "odd": Unprintable()}
        assert {
            "(1, 2)": "pair",
            "big": "<int that cannot be written>",
            "loop": ["<a cycle>"],
            "odd": "<Unprintable that cannot be written>",
        } == json.loads(json_writer()(value))

    @pytest.mark.parametrize("is_finite", [False, True])
    def test_a_non_finite_key_is_written_alike_either_way(self, is_finite: bool) -> None:
        """A NaN or infinite key is written as json.dumps writes it, also for a strict
        reader; a NaN value is NaN, or null for a strict reader."""
        written = json_writer(is_finite=is_finite)({float("nan"): float("nan"), (1,): 1})
        nan = "null" if is_finite else "NaN"
        assert f'{{"NaN": {nan}, "(1,)": 1}}' == written
