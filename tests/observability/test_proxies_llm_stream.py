"""A provider's own stream object, through the streaming proxy: metrics on or off, the same.

A provider of one's own may return a stream object of its own from ``stream``: with a
response id, usage it fills in at the end, methods, ``aclose``, ``async with``. The
container built with metrics on (the proxy) and off (the plain provider) must hand out
streams that answer alike, side by side; the observed one records the call once.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.core.interfaces import ChatMessage, StreamChunk
from tests.observability.metric_samples import samples
from tests.observability.proxy_fakes import FakeStreamingProvider

MESSAGES: list[ChatMessage] = [{"role": "user", "content": "hi"}]


class _ResponseStream:
    """A provider's own stream: a response id, usage filled in at its end, a method of its
    own, ``aclose``, and ``async with``."""

    def __init__(self, chunks: Sequence[Any]) -> None:
        self.response_id = "resp-1"
        self.usage: dict[str, int] | None = None
        self.closed = False
        self.closes = 0  # the calls of aclose
        self.exited = False
        self._chunks = iter(chunks)

    def __aiter__(self) -> _ResponseStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self.closed:
            raise StopAsyncIteration
        chunk = next(self._chunks, None)
        if chunk is None:
            self.usage = {"prompt_tokens": 5, "completion_tokens": 2}
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self.closed = True
        self.closes += 1

    def describe(self) -> str:
        return f"response {self.response_id}"

    async def __aenter__(self) -> _ResponseStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.exited = True
        await self.aclose()


class _ResponseProvider(FakeStreamingProvider):
    """A provider whose ``stream`` returns a :class:`_ResponseStream` (or raises at once)."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.call_error = error
        self.streams: list[_ResponseStream] = []

    def stream(  # a plain method that returns its stream object
        self, messages: Sequence[ChatMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[StreamChunk]:
        if self.call_error is not None:
            raise self.call_error
        self.streams.append(_ResponseStream(self.chunks))
        return self.streams[-1]


def _container(tmp_path: Path, provider: Any, *, metrics: bool) -> Container:
    settings = Settings(
        state_dir=tmp_path / f"state-{metrics}",
        workspace_dir=tmp_path / "workspace",
        metrics={"enabled": metrics},
    )
    return build_container(settings, llm_provider=provider)


def _requests(container: Container) -> dict[tuple[str, ...], Any]:
    """The requests the container counted: none with metrics off."""
    if container.metrics is None:
        return {}
    return samples(container.metrics, "taskforce_llm_requests_total")


_ON_OFF = pytest.mark.parametrize("metrics", [True, False], ids=["metrics-on", "metrics-off"])


class TestTheProvidersStreamObject:
    @_ON_OFF
    async def test_its_own_attributes_and_methods_are_reachable(
        self, tmp_path: Path, metrics: bool
    ) -> None:
        """The stream handed out is the provider's stream object: its class, its id, its
        method, usage it fills in as it ends, its aclose; the chunks are its own."""
        provider = _ResponseProvider()
        container = _container(tmp_path, provider, metrics=metrics)
        stream: Any = container.llm_provider.stream(MESSAGES)  # type: ignore[attr-defined]
        assert isinstance(stream, _ResponseStream)
        assert ("resp-1", "response resp-1", None) == (
            stream.response_id,
            stream.describe(),
            stream.usage,
        )
        assert provider.chunks == [chunk async for chunk in stream]
        assert {"prompt_tokens": 5, "completion_tokens": 2} == stream.usage
        await stream.aclose()
        assert provider.streams[-1].closed
        expected = {("stream-model", "none", "stream", "success"): 1} if metrics else {}
        assert expected == _requests(container)

    @_ON_OFF
    async def test_only_its_consumer_closes_it(self, tmp_path: Path, metrics: bool) -> None:
        """Read to its end, the provider's stream is not closed until the consumer closes
        it, and each ``aclose()`` reaches it; ``async with`` calls its ``__aexit__`` alone
        (which closes it once)."""
        provider = _ResponseProvider()
        container = _container(tmp_path, provider, metrics=metrics)
        stream: Any = container.llm_provider.stream(MESSAGES)  # type: ignore[attr-defined]
        assert provider.chunks == [chunk async for chunk in stream]
        assert 0 == provider.streams[-1].closes
        await stream.aclose()
        await stream.aclose()
        assert 2 == provider.streams[-1].closes
        entered: Any = container.llm_provider.stream(MESSAGES)  # type: ignore[attr-defined]
        async with entered:
            assert provider.chunks == [chunk async for chunk in entered]
        assert 1 == provider.streams[-1].closes
        expected = {("stream-model", "none", "stream", "success"): 2} if metrics else {}
        assert expected == _requests(container)

    @_ON_OFF
    async def test_an_async_generator_stays_one(self, tmp_path: Path, metrics: bool) -> None:
        """A provider's async generator (which has no attribute of its own): the stream
        handed out is an async generator too, with the same chunks."""
        provider = FakeStreamingProvider()
        container = _container(tmp_path, provider, metrics=metrics)
        stream: Any = container.llm_provider.stream(MESSAGES)  # type: ignore[attr-defined]
        assert inspect.isasyncgen(stream)
        assert provider.chunks == [chunk async for chunk in stream]

    @_ON_OFF
    async def test_a_stream_call_that_raises_raises_at_the_call(
        self, tmp_path: Path, metrics: bool
    ) -> None:
        """What the provider's ``stream`` call raises is raised by the call, not by the
        first step of the stream; it is the call's failure."""
        error = ValueError("bad arguments")
        container = _container(tmp_path, _ResponseProvider(error), metrics=metrics)
        with pytest.raises(ValueError) as caught:
            container.llm_provider.stream(MESSAGES)  # type: ignore[attr-defined]
        assert error is caught.value
        expected = {("default-model", "none", "stream", "error"): 1} if metrics else {}
        assert expected == _requests(container)

    @_ON_OFF
    async def test_closing_a_stream_never_read_closes_the_providers(
        self, tmp_path: Path, metrics: bool
    ) -> None:
        """``aclose()`` before the first chunk closes the provider's stream; no request."""
        provider = _ResponseProvider()
        container = _container(tmp_path, provider, metrics=metrics)
        stream: Any = container.llm_provider.stream(MESSAGES)  # type: ignore[attr-defined]
        await stream.aclose()
        assert provider.streams[-1].closed
        assert [] == [chunk async for chunk in stream]
        assert {} == _requests(container)

    @_ON_OFF
    async def test_async_with_hands_out_the_observed_stream(
        self, tmp_path: Path, metrics: bool
    ) -> None:
        """``async with`` on a stream object that is a context manager: the body gets the
        stream handed out (observed), and leaving it early closes the provider's stream and,
        with metrics on, records the call there and then."""
        provider = _ResponseProvider()
        container = _container(tmp_path, provider, metrics=metrics)
        stream: Any = container.llm_provider.stream(MESSAGES)  # type: ignore[attr-defined]
        async with stream as entered:
            assert entered is stream
            async for _ in entered:
                break
        assert (True, True) == (provider.streams[-1].exited, provider.streams[-1].closed)
        assert metrics == (type(stream) is not _ResponseStream)  # a proxy, with metrics on
        expected = {("default-model", "none", "stream", "success"): 1} if metrics else {}
        assert expected == _requests(container)
