"""Assembling a streamed chat completion's tool calls from their deltas, chunk by chunk."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk

from taskforce.infrastructure.llm import _openai_stream
from taskforce.infrastructure.llm._openai_stream import _StreamState


def _chunk(part: dict[str, Any]) -> ChatCompletionChunk:
    """A streamed chunk carrying one tool call delta, built as the SDK builds one."""
    choice = {"index": 0, "delta": {"tool_calls": [part]}, "finish_reason": None}
    frame = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    chunk = construct_type(type_=ChatCompletionChunk, value={**frame, "choices": [choice]})
    assert isinstance(chunk, ChatCompletionChunk)
    return chunk


class _CountingJSON(types.SimpleNamespace):
    """The json module, counting the texts decoded and their characters."""

    def __init__(self) -> None:
        super().__init__(decoded=0, chars=0)

    def loads(self, text: str) -> Any:
        self.decoded += 1
        self.chars += len(text)
        return json.loads(text)


def _with_new_ids(i: int, text: str) -> dict[str, Any]:
    """A piece under index 0 with an id of its own, the name on the first only."""
    named = {"name": "file_write"} if i == 0 else {}
    return {"index": 0, "id": f"p{i}", "function": {"arguments": text, **named}}


def _named_without_index(i: int, text: str) -> dict[str, Any]:
    """A piece without index or id that names its tool every time."""
    return {"function": {"name": "file_write", "arguments": text}}


class TestArgumentsInManyPieces:
    @pytest.mark.parametrize(
        "piece_of",
        [_with_new_ids, _named_without_index],
        ids=["a-new-id-on-each-piece", "the-name-on-each-piece-no-index"],
    )
    def test_are_decoded_a_bounded_number_of_times(
        self, monkeypatch: pytest.MonkeyPatch, piece_of: Any
    ) -> None:
        """Arguments streamed in many pieces by a server that sends a new id, or the name
        without an index, on each (which decide whether a piece starts another call once
        the arguments so far are a whole object) are decoded a bounded number of times,
        not once per piece: before, a call of 200 KB of arguments in 5-character pieces
        held the event loop for seconds (time growing with the square of its length)."""
        counting = _CountingJSON()
        monkeypatch.setattr(_openai_stream, "json", counting)
        arguments = {"path": "a.json", "content": '{"x": "}\\\\"}' * 100}
        text = json.dumps(arguments)
        state = _StreamState("m")

        for i in range(0, len(text), 5):
            state.add(_chunk(piece_of(i, text[i : i + 5])))

        (call,) = state.tool_calls()
        assert ("file_write", arguments) == (call["name"], call["arguments"])
        assert counting.chars <= 3 * len(text)
