"""Parts of one's own for the tests that serve them: tools and providers that behave on cue.

A tool gets its behaviour from a table by its name; a provider picks an odd answer when
the mission names a marker (``odd:<marker>`` anywhere in what it is sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["TableTool", "marker", "raises", "streamed"]


def raises(exc: BaseException) -> Callable[[], Any]:
    """A behaviour that raises ``exc`` (for a table of tools or answers)."""

    def behaviour() -> Any:
        raise exc

    return behaviour


def marker(texts: Sequence[object], table: Mapping[str, Any]) -> str | None:
    """The case a mission names (``odd:<marker>`` in what is sent), if ``table`` has it."""
    for text in texts:
        if isinstance(text, str) and "odd:" in text:
            found = text.split("odd:", 1)[1].split()[0]
            if found in table:
                return found
    return None


async def streamed(chunks: Iterable[Any]) -> AsyncGenerator[Any, None]:
    """Yield ``chunks`` as a provider's stream does; an exception among them is raised there."""
    for chunk in chunks:
        if isinstance(chunk, BaseException):
            raise chunk
        yield chunk


class TableTool:
    """A user's tool: no base class, no metrics code; ``table[name]`` says what it does.

    Its ``execute`` returns what that behaviour returns when called (awaited, if a
    coroutine), or raises what it raises.
    """

    description = "behaves as its table says"
    parameters_schema: dict[str, Any] = {"type": "object", "properties": {}}

    def __init__(self, name: str, table: Mapping[str, Callable[[], Any]]) -> None:
        self.name = name
        self._table = table

    async def execute(self, **params: Any) -> Any:
        outcome = self._table[self.name]()
        return await outcome if asyncio.iscoroutine(outcome) else outcome
