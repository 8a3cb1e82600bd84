"""jsonable: a tool's output, whatever it holds, can be written as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import wrapt

from taskforce.core.interfaces import jsonable as jsonable_module
from taskforce.core.interfaces.jsonable import (
    MAX_RESULT_DEPTH,
    MAX_WRITTEN_DEPTH,
    as_text,
    json_writer,
    jsonable,
    nests_within,
)
from tests.support.odd_values import Unprintable, Unrepresentable


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


def _nested(levels: int, inner: Any = 1) -> Any:
    """``inner`` inside ``levels`` dicts and lists, alternately (``levels`` deep)."""
    for level in range(levels):
        inner = {"a": inner} if level % 2 else [inner]
    return inner


class _Unreadable(list[Any]):
    """A list of one's own whose items cannot be read."""

    def __iter__(self) -> Any:
        raise RuntimeError("iter failed")


class TestNestsWithin:
    def test_counts_every_level_of_dicts_lists_and_tuples(self) -> None:
        """The value itself is the first level; a tuple counts as a list does."""
        assert nests_within(_nested(99, (1,)), MAX_RESULT_DEPTH)
        assert not nests_within(_nested(100, (1,)), MAX_RESULT_DEPTH)
        assert nests_within("text", 1)
        assert not nests_within([[]], 1)

    def test_nesting_past_the_recursion_limit_is_told_without_recursion(self) -> None:
        """Deeper than Python's recursion limit: told, not a RecursionError."""
        assert not nests_within(_nested(sys.getrecursionlimit() * 5), MAX_RESULT_DEPTH)

    def test_a_container_inside_itself_adds_no_level(self) -> None:
        """A cycle is written as ``<a cycle>``: it is no deeper than its way back."""
        loop: dict[str, Any] = {"list": [1]}
        loop["list"].append(loop)
        assert nests_within({"output": loop}, 3)
        assert not nests_within({"output": loop}, 2)

    def test_keys_are_not_walked(self) -> None:
        """A key is written as its text, however deep a tuple key nests."""
        key: tuple[Any, ...] = ()
        for _ in range(5):
            key = (key,)
        assert nests_within({key: 1}, 1)

    def test_a_container_of_plain_values_is_not_walked_into(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A listing of flat entries (what ``list_dir`` returns) is told by one look at
        each entry's values: the walk goes into the result and the list, not into each of
        its thousand entries, which a success is checked for twice per tool call."""
        walked: list[str] = []
        items = jsonable_module._items

        def counted(container: Any) -> Any:
            walked.append(type(container).__name__)
            return items(container)

        monkeypatch.setattr(jsonable_module, "_items", counted)
        entries = [{"name": f"file{i}.txt", "type": "file"} for i in range(1000)]
        assert nests_within({"success": True, "output": entries}, MAX_RESULT_DEPTH)
        assert ["dict", "list"] == walked

    def test_a_container_that_cannot_be_read_does_not_nest_within(self) -> None:
        """A list of one's own whose iteration raises: False, never the error."""
        assert not nests_within({"output": _Unreadable([1])}, MAX_RESULT_DEPTH)

    @pytest.mark.parametrize("is_finite", [False, True])
    def test_what_nests_within_the_limit_is_written_even_where_the_stack_is_deep(
        self, is_finite: bool
    ) -> None:
        """The deepest value a tool result may be is written, also through ``jsonable``
        (a tuple key makes ``json.dumps`` refuse it) and with the stack already deep."""
        value = {(1,): _nested(MAX_RESULT_DEPTH - 1)}
        assert nests_within(value, MAX_RESULT_DEPTH)
        write = json_writer(is_finite=is_finite)

        def deep_in_the_stack(frames: int) -> str:
            return write(value) if frames == 0 else deep_in_the_stack(frames - 1)

        text = deep_in_the_stack(sys.getrecursionlimit() // 2)
        assert text.startswith('{"(1,)": [{"a": [')


#: Nesting past what any Python's ``json`` writes: 3.13 writes 5,000 levels, where 3.11 and
#: 3.12 stop at their recursion limit.
_PAST_ANY_ENCODER = 20_000


class TestTooDeep:
    @pytest.mark.parametrize("is_finite", [False, True])
    def test_nesting_past_the_recursion_limit_is_cut(self, is_finite: bool) -> None:
        """A value json.dumps cannot write for its depth is written, cut where it nests
        deeper than ``MAX_WRITTEN_DEPTH`` levels."""
        deep: Any = 1
        for _ in range(_PAST_ANY_ENCODER):
            deep = [deep]
        cut: Any = "<nested too deep>"
        for _ in range(MAX_WRITTEN_DEPTH):
            cut = [cut]
        assert cut == json.loads(json_writer(is_finite=is_finite)(deep))
        assert cut == jsonable(deep)

    def test_the_deepest_result_allowed_is_written_whole_deep_in_a_stack(self) -> None:
        """A value of ``MAX_WRITTEN_DEPTH`` levels (the most agent.max_result_depth allows)
        that the encoder refuses (a NaN for a strict writer, so the fallback writes it) is
        written whole, not cut and without a RecursionError, from 200 frames down."""
        deep: Any = float("nan")
        for _ in range(MAX_WRITTEN_DEPTH):
            deep = [deep]
        expected: Any = None
        for _ in range(MAX_WRITTEN_DEPTH):
            expected = [expected]

        def write(frames: int) -> Any:
            return write(frames - 1) if frames else json_writer(is_finite=True)(deep)

        assert expected == json.loads(write(200))
        assert nests_within(deep, MAX_WRITTEN_DEPTH)
        assert not nests_within([deep], MAX_WRITTEN_DEPTH)


class TestWrittenByItsType:
    """``json_writer`` reads a value by its type, as the json encoder does, also when it
    writes it again through ``jsonable``: what claims another ``__class__`` is a value."""

    def test_a_proxy_of_a_deep_dict_is_written_as_a_value(self) -> None:
        """A proxy (``__class__`` says dict) of a dict nested past the recursion limit, in
        an output the encoder refuses (a tuple key): its text, not a RecursionError."""
        deep: Any = 1
        for _ in range(_PAST_ANY_ENCODER):
            deep = {"a": deep}
        value = {"k": wrapt.ObjectProxy(deep), (1, 2): "x"}
        assert nests_within(value, MAX_RESULT_DEPTH)
        written = json.loads(json_writer()(value))
        assert {"k": "<ObjectProxy that cannot be written>", "(1, 2)": "x"} == written

    def test_a_value_whose_class_cannot_be_read_is_written(self) -> None:
        """A value and a key whose ``__class__`` raises, beside a tuple key: placeholders."""
        odd = "<Unrepresentable that cannot be written>"
        value = {"v": Unrepresentable(), Unrepresentable(): 1, (1,): 2}
        assert {"v": odd, odd: 1, "(1,)": 2} == json.loads(json_writer()(value))

    def test_a_proxy_of_text_as_a_key_is_written_as_its_text(self) -> None:
        """A key that only claims to be text is written as its text (the encoder refuses it)."""
        written = json.loads(json_writer()({wrapt.ObjectProxy("key"): 1, (1,): 2}))
        assert {"key": 1, "(1,)": 2} == written
