"""The LLM provider proxies: parity, requests, tokens, context pack size, streams."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.core.interfaces import LLMProviderProtocol, StreamingLLMProviderProtocol
from taskforce.errors import LLMProviderError
from taskforce.observability import (
    LLMProviderProxy,
    StreamingLLMProviderProxy,
    mission_scope,
    observe_llm_provider,
)
from taskforce.observability._proxy_base import _forget_logged_faults
from tests.observability.proxy_fakes import (
    BrokenMetrics,
    FakeProvider,
    FakeStreamingProvider,
    RecordingMetrics,
)

MESSAGES = [
    {"role": "system", "content": "x" * 40},
    {"role": "user", "content": "y" * 21},
    {"role": "assistant", "content": None},
]


@pytest.fixture(autouse=True, name="_fresh_fault_log")
def fixture_fresh_fault_log() -> Iterator[None]:
    """Each test sees every fault logged afresh (the log-once set is process-wide)."""
    _forget_logged_faults()
    yield
    _forget_logged_faults()


@pytest.fixture(name="metrics")
def fixture_metrics() -> RecordingMetrics:
    return RecordingMetrics()


class TestFactory:
    def test_provider_without_stream_has_none_through_the_proxy(
        self, metrics: RecordingMetrics
    ) -> None:
        """hasattr(proxy, 'stream') is False for a provider without stream."""
        proxy = observe_llm_provider(FakeProvider(), metrics)
        assert type(proxy) is LLMProviderProxy
        assert not hasattr(proxy, "stream")
        assert isinstance(proxy, LLMProviderProtocol)
        assert not isinstance(proxy, StreamingLLMProviderProtocol)

    def test_streaming_provider_keeps_stream(self, metrics: RecordingMetrics) -> None:
        """A provider with stream gets the streaming proxy, whose stream is an async generator."""
        proxy = observe_llm_provider(FakeStreamingProvider(), metrics)
        assert type(proxy) is StreamingLLMProviderProxy
        assert isinstance(proxy, FakeStreamingProvider)
        assert isinstance(proxy, StreamingLLMProviderProtocol)
        assert inspect.isasyncgenfunction(proxy.stream)
        assert inspect.iscoroutinefunction(proxy.complete)

    def test_attributes_pass_through(self, metrics: RecordingMetrics) -> None:
        """Attributes and __wrapped__ are the provider's."""
        provider = FakeProvider()
        proxy = observe_llm_provider(provider, metrics)
        assert "default-model" == proxy.model
        assert provider is proxy.__wrapped__


class TestComplete:
    async def test_success_records_request_tokens_and_pack(self, metrics: RecordingMetrics) -> None:
        """A successful complete: one success request, its tokens and the context pack."""
        provider = FakeProvider()
        result = await observe_llm_provider(provider, metrics).complete(MESSAGES)
        assert provider.answer is result
        assert [
            ("llm_request", {"model": "reported-model", "agent_type": "none",
                             "operation": "complete", "status": "success"}),
            ("context_pack", {"agent_type": "none", "messages": 3, "tokens": 16}),
            ("llm_tokens", {"model": "reported-model", "agent_type": "none",
                            "input_tokens": 11, "output_tokens": 7}),
        ] == [
            (name, {k: v for k, v in args.items() if k != "duration_seconds"})
            for name, args in metrics.calls
        ]  # fmt: skip

    async def test_success_false_is_an_error(self, metrics: RecordingMetrics) -> None:
        """A returned success: false counts as an error; the result is returned unchanged."""
        failed = {"success": False, "error": "rate limited"}
        provider = FakeProvider(answer=failed)
        assert failed is await observe_llm_provider(provider, metrics).complete(MESSAGES)
        (request,) = metrics.of("llm_request")
        assert "error" == request["status"]
        assert [] == metrics.of("llm_tokens")

    async def test_raise_is_an_error_and_the_same_exception(
        self, metrics: RecordingMetrics
    ) -> None:
        """A raising provider: the same exception object, an error request, the pack recorded."""
        error = LLMProviderError("down", provider="fake")
        proxy = observe_llm_provider(FakeProvider(error=error), metrics)
        with pytest.raises(LLMProviderError) as caught:
            await proxy.complete(MESSAGES, model="asked")
        assert error is caught.value
        (request,) = metrics.of("llm_request")
        assert ("asked", "error") == (request["model"], request["status"])
        assert 1 == len(metrics.of("context_pack"))

    @pytest.mark.parametrize(
        ("answer", "kwargs", "attr", "expected"),
        [
            ({"success": True, "model": "reported"}, {"model": "asked"}, "attr", "reported"),
            ({"success": True}, {"model": "asked"}, "attr", "asked"),
            ({"success": True}, {}, "attr", "attr"),
            ({"success": True}, {}, None, "unknown"),
        ],
    )
    async def test_model_label_resolution(
        self,
        metrics: RecordingMetrics,
        answer: dict[str, Any],
        kwargs: dict[str, Any],
        attr: str | None,
        expected: str,
    ) -> None:
        """model = the reported model, else the model argument, else .model, else 'unknown'."""
        provider = FakeProvider(answer=answer)
        provider.model = attr  # type: ignore[assignment]
        await observe_llm_provider(provider, metrics).complete(MESSAGES, **kwargs)
        assert expected == metrics.of("llm_request")[0]["model"]

    async def test_positional_model_argument(self, metrics: RecordingMetrics) -> None:
        """A model passed positionally is recognised like the keyword form."""
        provider = FakeProvider(answer={"success": True})
        await observe_llm_provider(provider, metrics).complete(MESSAGES, "positional")
        assert "positional" == metrics.of("llm_request")[0]["model"]

    async def test_latency_covers_the_await(self, metrics: RecordingMetrics) -> None:
        """The latency is that of the awaited call."""
        provider = FakeProvider()
        provider.delay = 0.05
        await observe_llm_provider(provider, metrics).complete(MESSAGES)
        assert metrics.of("llm_request")[0]["duration_seconds"] >= 0.045

    async def test_agent_type_from_the_mission(self, metrics: RecordingMetrics) -> None:
        """Inside a mission scope the request carries the mission's agent_type."""
        proxy = observe_llm_provider(FakeProvider(), metrics)
        with mission_scope("s", "m", "lean"):
            await proxy.complete(MESSAGES)
        assert {"lean"} == {args["agent_type"] for _, args in metrics.calls}

    async def test_cancelled_call_records_nothing(self, metrics: RecordingMetrics) -> None:
        """A complete cancelled by its caller has no outcome and records nothing."""
        provider = FakeProvider()
        provider.delay = 10
        task = asyncio.create_task(observe_llm_provider(provider, metrics).complete(MESSAGES))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [] == metrics.calls


class TestGenerate:
    async def test_generate_is_one_message(self, metrics: RecordingMetrics) -> None:
        """generate records operation 'generate' and a pack of one message (prompt + context)."""
        provider = FakeProvider()
        proxy = observe_llm_provider(provider, metrics)
        assert provider.answer is await proxy.generate("p" * 30, context={"k": "v"})
        (request,) = metrics.of("llm_request")
        assert "generate" == request["operation"]
        (pack,) = metrics.of("context_pack")
        # 30 chars of prompt + len("{'k': 'v'}") == 10 -> 40 chars -> 10 tokens
        assert (1, 10) == (pack["messages"], pack["tokens"])


class TestStream:
    async def test_full_stream(self, metrics: RecordingMetrics) -> None:
        """A stream read to its end: same chunks, TTFT once, one success request, last usage."""
        provider = FakeStreamingProvider()
        proxy = observe_llm_provider(provider, metrics)
        chunks = [chunk async for chunk in proxy.stream(MESSAGES)]
        assert provider.chunks == chunks
        assert all(a is b for a, b in zip(provider.chunks, chunks, strict=True))
        (ttft,) = metrics.of("time_to_first_token")
        (request,) = metrics.of("llm_request")
        (tokens,) = metrics.of("llm_tokens")
        assert ("stream-model", "stream", "success") == (
            request["model"],
            request["operation"],
            request["status"],
        )
        assert (5, 2) == (tokens["input_tokens"], tokens["output_tokens"])
        assert 0.0 <= ttft["seconds"] <= request["duration_seconds"]
        assert 1 == len(metrics.of("context_pack"))

    async def test_ttft_is_the_first_chunk(self, metrics: RecordingMetrics) -> None:
        """TTFT is measured to the first chunk, the latency to the end; same model label."""
        provider = FakeStreamingProvider()
        provider.chunk_delay = 0.03
        async for _ in observe_llm_provider(provider, metrics).stream(MESSAGES):
            pass
        (ttft_call,) = metrics.of("time_to_first_token")
        (request,) = metrics.of("llm_request")
        assert "stream-model" == ttft_call["model"] == request["model"]
        ttft, duration = ttft_call["seconds"], request["duration_seconds"]
        assert 0.025 <= ttft < duration
        assert duration >= 0.085

    async def test_early_close_counts_once_as_success(self, metrics: RecordingMetrics) -> None:
        """A consumer that stops after one chunk: inner stream closed, one success request."""
        provider = FakeStreamingProvider()
        stream = observe_llm_provider(provider, metrics).stream(MESSAGES, model="asked")
        async with aclosing(stream) as chunks:
            async for _ in chunks:
                break
        assert provider.closed
        (request,) = metrics.of("llm_request")
        assert ("asked", "success") == (request["model"], request["status"])
        assert [] == metrics.of("llm_tokens")
        await stream.aclose()  # closing again changes nothing
        assert 1 == len(metrics.of("llm_request"))

    async def test_error_mid_stream(self, metrics: RecordingMetrics) -> None:
        """An exception mid-stream: the same object comes out, one error request."""
        provider = FakeStreamingProvider()
        provider.stream_error = LLMProviderError("cut")
        provider.fail_after = 1
        error = provider.stream_error
        received = []
        with pytest.raises(LLMProviderError) as caught:
            async for chunk in observe_llm_provider(provider, metrics).stream(MESSAGES):
                received.append(chunk)
        assert error is caught.value
        assert 1 == len(received)
        (request,) = metrics.of("llm_request")
        assert "error" == request["status"]
        assert 1 == len(metrics.of("time_to_first_token"))

    async def test_error_before_first_chunk(self, metrics: RecordingMetrics) -> None:
        """A stream failing before any chunk: no TTFT, one error request."""
        provider = FakeStreamingProvider()
        provider.stream_error = LLMProviderError("refused")
        with pytest.raises(LLMProviderError):
            async for _ in observe_llm_provider(provider, metrics).stream(MESSAGES):
                pass
        assert [] == metrics.of("time_to_first_token")
        assert ["error"] == [r["status"] for r in metrics.of("llm_request")]

    async def test_cancelled_consumer_counts_once(self, metrics: RecordingMetrics) -> None:
        """A consumer cancelled mid-stream: cancellation passes through, one request recorded."""
        provider = FakeStreamingProvider()
        provider.chunk_delay = 0.05
        got_one = asyncio.Event()

        async def consume() -> None:
            async for _ in observe_llm_provider(provider, metrics).stream(MESSAGES):
                got_one.set()

        task = asyncio.create_task(consume())
        await got_one.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ["success"] == [r["status"] for r in metrics.of("llm_request")]
        assert not provider.finished

    async def test_stream_agent_type(self, metrics: RecordingMetrics) -> None:
        """A stream inside a mission scope carries the mission's agent_type everywhere."""
        proxy = observe_llm_provider(FakeStreamingProvider(), metrics)
        with mission_scope("s", "m", "legacy"):
            async for _ in proxy.stream(MESSAGES):
                pass
        assert {"legacy"} == {args["agent_type"] for _, args in metrics.calls}


class TestLLMFaults:
    async def test_broken_metrics_do_not_change_the_call(self) -> None:
        """A raising MetricSet: results unchanged, every fault counted, logged once per stage.

        A call's request, pack and tokens are one ``record_llm_call``: one fault per call.
        """
        metrics = BrokenMetrics()
        provider = FakeStreamingProvider()
        proxy = observe_llm_provider(provider, metrics)
        with capture_logs() as logs:
            assert provider.answer is await proxy.complete(MESSAGES)
            assert provider.answer is await proxy.complete(MESSAGES)
            assert provider.chunks == [c async for c in proxy.stream(MESSAGES)]
        assert [
            "llm.complete",
            "llm.complete",
            "llm.stream",
            "llm.ttft",
        ] == [f["stage"] for f in metrics.of("fault")]
        assert [
            ("StreamingLLMProviderProxy", "llm.complete"),
            ("StreamingLLMProviderProxy", "llm.stream"),
            ("StreamingLLMProviderProxy", "llm.ttft"),
        ] == [(log["proxy"], log["stage"]) for log in logs]

    async def test_malformed_messages_are_a_fault(self, metrics: RecordingMetrics) -> None:
        """Messages the pack estimate cannot read: the call still works, the request counts."""
        provider = FakeProvider()
        assert provider.answer is await observe_llm_provider(provider, metrics).complete([1, 2])
        assert [{"stage": "llm.context_pack"}] == metrics.of("fault")
        assert 1 == len(metrics.of("llm_request"))
