"""The LLM provider proxies: parity, requests, tokens, context pack size, streams."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import weakref
from contextlib import aclosing
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from taskforce.core.domain import LeanAgent
from taskforce.core.interfaces import LLMProviderProtocol, StreamingLLMProviderProtocol
from taskforce.core.interfaces.llm import LLMAttempt
from taskforce.errors import LLMProviderError
from taskforce.observability import (
    LLMProviderProxy,
    StreamingLLMProviderProxy,
    mission_scope,
    observe_llm_provider,
)
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies import _llm_stream as llm_stream_module
from tests.core.domain.fakes import FakeRegistry
from tests.observability.metric_samples import BrokenMetrics, faults, samples
from tests.observability.proxy_fakes import FakeProvider, FakeStreamingProvider
from tests.support.odd_values import RaisingGet, Unequal, UnprintableText, Unrepresentable

MESSAGES = [
    {"role": "system", "content": "x" * 40},
    {"role": "user", "content": "y" * 21},
    {"role": "assistant", "content": None},
]


class _NoContent(dict[str, Any]):
    """A chunk whose ``content`` cannot be read (its other keys can)."""

    def get(self, key: str, default: Any = None) -> Any:
        if key == "content":
            raise RuntimeError("content cannot be read")
        return super().get(key, default)


class _Messages(list[Any]):
    """A conversation a weak reference can follow."""


def _requests(metrics: MetricSet) -> list[tuple[str, str, str, str]]:
    """Every request recorded: (model, agent_type, operation, status), one per request."""
    counted = samples(metrics, "taskforce_llm_requests_total")
    return [
        cast(tuple[str, str, str, str], labels)
        for labels, count in counted.items()
        for _ in range(int(count))
    ]


def _latency(metrics: MetricSet) -> float:
    """The latency of the one request recorded."""
    ((count, total),) = samples(metrics, "taskforce_llm_request_duration_seconds").values()
    assert 1 == count
    return float(total)


def _tokens(metrics: MetricSet) -> dict[tuple[str, ...], Any]:
    """Tokens counted: (model, agent_type, token_type) -> count."""
    return samples(metrics, "taskforce_llm_tokens_total")


def _packs(metrics: MetricSet) -> dict[str, tuple[Any, Any]]:
    """Context packs observed per agent_type: (messages (count, sum), tokens (count, sum))."""
    messages = samples(metrics, "taskforce_context_pack_messages")
    tokens = samples(metrics, "taskforce_context_pack_tokens")
    return {agent: (messages[(agent,)], tokens[(agent,)]) for (agent,) in messages}


def _ttft(metrics: MetricSet) -> dict[tuple[str, ...], Any]:
    """Times to first token: (model, agent_type) -> (count, sum)."""
    return samples(metrics, "taskforce_llm_time_to_first_token_seconds")


class TestFactory:
    def test_provider_without_stream_has_none_through_the_proxy(self, metrics: MetricSet) -> None:
        """hasattr(proxy, 'stream') is False for a provider without stream."""
        proxy = observe_llm_provider(FakeProvider(), metrics)
        assert type(proxy) is LLMProviderProxy
        assert not hasattr(proxy, "stream")
        assert isinstance(proxy, LLMProviderProtocol)
        assert not isinstance(proxy, StreamingLLMProviderProtocol)

    def test_streaming_provider_keeps_stream(self, metrics: MetricSet) -> None:
        """A provider with stream gets the streaming proxy, whose stream hands out the
        provider's stream: an async generator, as the provider's is."""
        provider = FakeStreamingProvider()
        proxy = observe_llm_provider(provider, metrics)
        assert type(proxy) is StreamingLLMProviderProxy
        assert isinstance(proxy, FakeStreamingProvider)
        assert isinstance(proxy, StreamingLLMProviderProtocol)
        assert inspect.isasyncgen(proxy.stream(MESSAGES))
        assert inspect.isasyncgen(provider.stream(cast(Any, MESSAGES)))
        assert inspect.iscoroutinefunction(proxy.complete)

    def test_attributes_pass_through(self, metrics: MetricSet) -> None:
        """Attributes and __wrapped__ are the provider's."""
        provider = FakeProvider()
        proxy = observe_llm_provider(provider, metrics)
        assert "default-model" == proxy.model
        assert provider is proxy.__wrapped__


class TestComplete:
    async def test_success_records_request_tokens_and_pack(self, metrics: MetricSet) -> None:
        """A successful complete: one success request, its tokens and the context pack."""
        provider = FakeProvider()
        result = await observe_llm_provider(provider, metrics).complete(MESSAGES)
        assert provider.answer is result
        assert [("reported-model", "none", "complete", "success")] == _requests(metrics)
        assert {"none": ((1, 3.0), (1, 16.0))} == _packs(metrics)
        assert {
            ("reported-model", "none", "input"): 11,
            ("reported-model", "none", "output"): 7,
        } == _tokens(metrics)

    async def test_success_false_is_an_error(self, metrics: MetricSet) -> None:
        """A returned success: false counts as an error; the result is returned unchanged."""
        failed = {"success": False, "error": "rate limited"}
        provider = FakeProvider(answer=failed)
        assert failed is await observe_llm_provider(provider, metrics).complete(MESSAGES)
        ((_, _, _, status),) = _requests(metrics)
        assert "error" == status
        assert {} == _tokens(metrics)

    async def test_raise_is_an_error_and_the_same_exception(self, metrics: MetricSet) -> None:
        """A raising provider: the same exception object, an error request, the pack recorded."""
        error = LLMProviderError("down", provider="fake")
        proxy = observe_llm_provider(FakeProvider(error=error), metrics)
        with pytest.raises(LLMProviderError) as caught:
            await proxy.complete(MESSAGES, model="asked")
        assert error is caught.value
        ((model, _, _, status),) = _requests(metrics)
        assert ("asked", "error") == (model, status)
        assert 1 == len(_packs(metrics))

    @pytest.mark.parametrize(
        ("answer", "kwargs", "attr", "expected"),
        [
            ({"success": True, "model": "reported"}, {"model": "asked"}, "attr", "reported"),
            ({"success": True}, {"model": "asked"}, "attr", "asked"),
            ({"success": True}, {}, "attr", "attr"),
            ({"success": True}, {}, None, "unknown"),
            ({"success": True, "model": 42}, {"model": "asked"}, "attr", "42"),
            # a model that cannot be printed (or whose truth cannot be read) is no model
            # reported: the call still counts
            ({"success": True, "model": UnprintableText("x")}, {"model": "asked"}, "attr", "asked"),
            ({"success": True, "model": Unequal("x")}, {"model": "asked"}, "attr", "asked"),
        ],
    )
    async def test_model_label_resolution(
        self,
        metrics: MetricSet,
        answer: dict[str, Any],
        kwargs: dict[str, Any],
        attr: str | None,
        expected: str,
    ) -> None:
        """model = the reported model (as text), else the model argument, else .model, else
        'unknown'."""
        provider = FakeProvider(answer=answer)
        provider.model = attr  # type: ignore[assignment]
        await observe_llm_provider(provider, metrics).complete(MESSAGES, **kwargs)
        assert expected == _requests(metrics)[0][0]

    async def test_positional_model_argument(self, metrics: MetricSet) -> None:
        """A model passed positionally is recognised like the keyword form."""
        provider = FakeProvider(answer={"success": True})
        await observe_llm_provider(provider, metrics).complete(MESSAGES, "positional")
        assert "positional" == _requests(metrics)[0][0]

    async def test_latency_covers_the_await(self, metrics: MetricSet) -> None:
        """The latency is that of the awaited call."""
        provider = FakeProvider()
        provider.delay = 0.05
        await observe_llm_provider(provider, metrics).complete(MESSAGES)
        assert _latency(metrics) >= 0.045

    async def test_agent_type_from_the_mission(self, metrics: MetricSet) -> None:
        """Inside a mission scope the request carries the mission's agent_type."""
        proxy = observe_llm_provider(FakeProvider(), metrics)
        with mission_scope("s", "m", "lean"):
            await proxy.complete(MESSAGES)
        assert {"lean"} == {agent for _, agent, _, _ in _requests(metrics)}
        assert {"lean"} == set(_packs(metrics))
        assert {"lean"} == {agent for _, agent, _ in _tokens(metrics)}

    async def test_cancelled_call_records_nothing(self, metrics: MetricSet) -> None:
        """A complete cancelled by its caller has no outcome and records nothing."""
        provider = FakeProvider()
        provider.delay = 10
        task = asyncio.create_task(observe_llm_provider(provider, metrics).complete(MESSAGES))
        await provider.waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [] == _requests(metrics)
        assert {} == _packs(metrics)

    @pytest.mark.parametrize("operation", ["complete", "generate"])
    async def test_cancelled_call_counts_the_retries_it_made(
        self, metrics: MetricSet, operation: str
    ) -> None:
        """Cancelled after two failed attempts: no request and no failure, but the two
        retries the provider made (and logged) are counted, from the report it put on
        the cancellation."""
        provider = FakeProvider()
        provider.delay = 10
        provider.cancel_attempts = [
            LLMAttempt("rate_limit", 0.01),
            LLMAttempt("server_error", 0.01),
            LLMAttempt(None, 0.02),
        ]
        proxy = observe_llm_provider(provider, metrics)
        if operation == "complete":
            task = asyncio.create_task(proxy.complete(MESSAGES, model="m"))
        else:
            task = asyncio.create_task(proxy.generate("prompt", None, "m"))
        await provider.waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [] == _requests(metrics)
        assert {} == samples(metrics, "taskforce_llm_failures_total")
        assert {
            ("m", "none", "rate_limit"): 1,
            ("m", "none", "server_error"): 1,
        } == samples(metrics, "taskforce_llm_retries_total")

    @pytest.mark.parametrize("raised", [asyncio.CancelledError(), SystemExit(2)], ids=repr)
    async def test_a_base_exception_of_the_providers_own_is_an_error(
        self, metrics: MetricSet, raised: BaseException
    ) -> None:
        """A CancelledError the provider raised itself (nobody cancelled the caller), or a
        SystemExit: the same object comes out, and the call is an error ``other``, as the
        agents fail it."""
        proxy = observe_llm_provider(FakeProvider(error=raised), metrics)
        with pytest.raises(type(raised)) as caught:
            await proxy.complete(MESSAGES, model="m")
        assert raised is caught.value
        assert [("m", "none", "complete", "error")] == _requests(metrics)
        assert {("m", "none", "other"): 1} == samples(metrics, "taskforce_llm_failures_total")

    async def test_a_failure_shares_the_series_of_the_model_it_resolves_to(
        self, metrics: MetricSet
    ) -> None:
        """A provider answers ``gpt-4o`` as ``gpt-4o-2024-08-06``; its failures report no
        model. Before any success a failure is labelled with the model asked for; after
        one, with the model that name resolved to, so the error ratio of that model counts
        them (streams and retries alike)."""
        provider = FakeProvider(error=LLMProviderError("down", error_type="server_error"))
        proxy = observe_llm_provider(provider, metrics)
        with pytest.raises(LLMProviderError):
            await proxy.complete(MESSAGES, model="gpt-4o")
        provider.error = None
        provider.answer = {"success": True, "model": "gpt-4o-2024-08-06"}
        await proxy.complete(MESSAGES, model="gpt-4o")
        provider.error = LLMProviderError(
            "down", error_type="server_error", attempts=[LLMAttempt("rate_limit", 0.01)] * 2
        )
        with pytest.raises(LLMProviderError):
            await proxy.complete(MESSAGES, model="gpt-4o")
        provider.error, provider.answer = None, {"success": False, "error": "refused"}
        await proxy.complete(MESSAGES, model="gpt-4o")

        assert [
            ("gpt-4o", "none", "complete", "error"),
            ("gpt-4o-2024-08-06", "none", "complete", "success"),
            ("gpt-4o-2024-08-06", "none", "complete", "error"),
            ("gpt-4o-2024-08-06", "none", "complete", "error"),
        ] == _requests(metrics)
        assert {
            ("gpt-4o", "none", "server_error"): 1,
            ("gpt-4o-2024-08-06", "none", "server_error"): 1,
            ("gpt-4o-2024-08-06", "none", "other"): 1,
        } == samples(metrics, "taskforce_llm_failures_total")
        assert {("gpt-4o-2024-08-06", "none", "rate_limit"): 1} == samples(
            metrics, "taskforce_llm_retries_total"
        )

    async def test_a_failure_takes_the_model_its_alias_resolves_to_now(
        self, metrics: MetricSet
    ) -> None:
        """An alias the provider moved to a new version and back again: a failure after
        that is labelled with the version the alias resolves to now, not the one before."""
        provider = FakeProvider(answer={"success": True, "model": "gpt-4o-2024-08-06"})
        proxy = observe_llm_provider(provider, metrics)
        for version in ("gpt-4o-2024-08-06", "gpt-4o-2024-11-20", "gpt-4o-2024-08-06"):
            provider.answer = {"success": True, "model": version}
            await proxy.complete(MESSAGES, model="gpt-4o")
            provider.error = LLMProviderError("down", error_type="server_error")
            with pytest.raises(LLMProviderError):
                await proxy.complete(MESSAGES, model="gpt-4o")
            provider.error = None

        assert {
            ("gpt-4o-2024-08-06", "none", "server_error"): 2,
            ("gpt-4o-2024-11-20", "none", "server_error"): 1,
        } == samples(metrics, "taskforce_llm_failures_total")

    async def test_a_failure_naming_the_model_it_asked_for_teaches_nothing(
        self, metrics: MetricSet
    ) -> None:
        """A failed result that names the model it asked for (``gpt-4o``) is labelled with
        what that resolved to, and does not undo what the successes taught."""
        provider = FakeProvider(answer={"success": True, "model": "gpt-4o-2024-08-06"})
        proxy = observe_llm_provider(provider, metrics)
        await proxy.complete(MESSAGES, model="gpt-4o")
        provider.answer = {"success": False, "model": "gpt-4o", "error_type": "auth"}
        await proxy.complete(MESSAGES, model="gpt-4o")
        provider.error = LLMProviderError("down", error_type="auth")
        with pytest.raises(LLMProviderError):
            await proxy.complete(MESSAGES, model="gpt-4o")

        assert {("gpt-4o-2024-08-06", "none", "auth"): 2} == samples(
            metrics, "taskforce_llm_failures_total"
        )

    async def test_a_failed_call_counts_the_tokens_its_error_reports(
        self, metrics: MetricSet
    ) -> None:
        """The server billed tokens, then the call failed: the error's ``usage`` is counted."""
        error = LLMProviderError(
            "the answer could not be read",
            error_type="invalid_response",
            usage={"prompt_tokens": 11, "completion_tokens": 7},
        )
        with pytest.raises(LLMProviderError):
            await observe_llm_provider(FakeProvider(error=error), metrics).complete(
                MESSAGES, model="m"
            )
        assert {("m", "none", "input"): 11, ("m", "none", "output"): 7} == _tokens(metrics)
        assert [("m", "none", "complete", "error")] == _requests(metrics)


class TestGenerate:
    async def test_generate_is_one_message(self, metrics: MetricSet) -> None:
        """generate records operation 'generate' and a pack of one message (prompt + context)."""
        provider = FakeProvider()
        proxy = observe_llm_provider(provider, metrics)
        assert provider.answer is await proxy.generate("p" * 30, context={"k": "v"})
        ((_, _, operation, _),) = _requests(metrics)
        assert "generate" == operation
        # 30 chars of prompt + len("{'k': 'v'}") == 10 -> 40 chars -> 10 tokens
        assert {"none": ((1, 1.0), (1, 10.0))} == _packs(metrics)


class _Chunk(dict[str, Any]):
    """A chunk of the provider's own dict class."""


class TestStream:
    @pytest.mark.parametrize(
        ("last", "failure"),
        [
            ({"content": 5}, "invalid_response"),
            (None, "invalid_response"),
            (RaisingGet(done=True), "invalid_response"),
            ({"done": True, "content": 5}, None),
            (_Chunk(done=True), None),
            ({"attempts": [{"error_type": "rate_limit", "duration_seconds": 0.1}]}, None),
            ({"content": ""}, None),
            ({"content": 0}, None),
        ],
        ids=[
            "text-no-string",
            "no-dict",
            "get-raises",
            "done-with-odd-content",
            "dict-subclass",
            "attempt-report",
            "empty-text",
            "false-text",
        ],
    )
    async def test_the_last_chunk_read_decides_as_the_agents_do(
        self, metrics: MetricSet, last: Any, failure: str | None
    ) -> None:
        """A stream whose last chunk the agents cannot use is an invalid_response, counted
        as such, without a fault; any other last chunk is a success."""
        provider = FakeStreamingProvider([{"content": "hel"}, last])
        chunks = [c async for c in observe_llm_provider(provider, metrics).stream(MESSAGES)]
        assert last is chunks[-1]
        status = "success" if failure is None else "error"
        assert [status] == [labels[3] for labels in _requests(metrics)]
        failures = samples(metrics, "taskforce_llm_failures_total")
        assert ([] if failure is None else [failure]) == [labels[2] for labels in failures]
        assert {} == faults(metrics)

    @pytest.mark.parametrize("fail_after", [0, 1], ids=["at-once", "after-a-chunk"])
    async def test_a_failed_stream_makes_no_reference_cycle(
        self, metrics: MetricSet, fail_after: int
    ) -> None:
        """What a failed stream's caller held is freed once the caller drops the error,
        without the cyclic collector: the proxy keeps no reference to the error it saw
        (the error's traceback holds the proxy's frame, and Python 3.12 on keeps the
        caller's frames there too: a session's lock, say)."""
        provider = FakeStreamingProvider()
        provider.stream_error, provider.fail_after = RuntimeError("stream broke"), fail_after
        proxy = observe_llm_provider(provider, metrics)
        messages = _Messages(MESSAGES)
        sent = weakref.ref(messages)

        async def consume(messages: _Messages) -> None:
            with contextlib.suppress(RuntimeError):
                async for _ in proxy.stream(messages):
                    pass

        gc.collect()
        gc.disable()
        try:
            await consume(messages)
            provider.stream_error = None  # the provider's own hold on the error
            del messages
            assert sent() is None
        finally:
            gc.enable()
        assert ["error"] == [labels[3] for labels in _requests(metrics)]

    async def test_full_stream(self, metrics: MetricSet) -> None:
        """A stream read to its end: same chunks, TTFT once, one success request, last usage."""
        provider = FakeStreamingProvider()
        proxy = observe_llm_provider(provider, metrics)
        chunks = [chunk async for chunk in proxy.stream(MESSAGES)]
        assert provider.chunks == chunks
        assert all(a is b for a, b in zip(provider.chunks, chunks, strict=True))
        assert [("stream-model", "none", "stream", "success")] == _requests(metrics)
        assert {
            ("stream-model", "none", "input"): 5,
            ("stream-model", "none", "output"): 2,
        } == _tokens(metrics)
        ((count, ttft),) = _ttft(metrics).values()
        assert 1 == count
        assert 0.0 <= ttft <= _latency(metrics)
        assert 1 == len(_packs(metrics))

    async def test_ttft_is_the_first_chunk(self, metrics: MetricSet) -> None:
        """TTFT is measured to the first chunk, the latency to the end; same model label."""
        provider = FakeStreamingProvider()
        provider.chunk_delay = 0.03
        async for _ in observe_llm_provider(provider, metrics).stream(MESSAGES):
            pass
        (((ttft_model, _), (_, ttft)),) = _ttft(metrics).items()
        ((model, _, _, _),) = _requests(metrics)
        assert "stream-model" == ttft_model == model
        duration = _latency(metrics)
        assert 0.025 <= ttft < duration
        assert duration >= 0.085

    @pytest.mark.parametrize("failed", [False, True], ids=["answered", "failed-after-text"])
    async def test_ttft_starts_with_the_attempt_that_streams(
        self, metrics: MetricSet, monkeypatch: pytest.MonkeyPatch, failed: bool
    ) -> None:
        """TTFT runs from the start of the attempt that streamed, by the attempt report:
        the failed attempts and the waits before it are left out (they are in the latency),
        whether the stream then ends or fails."""
        clock = [100.0]
        monkeypatch.setattr(llm_stream_module, "perf_counter", lambda: clock[0])
        # a 429 that took 2 s, a Retry-After wait of 5 s, then the attempt that streams
        attempts = [LLMAttempt("rate_limit", 2.0), LLMAttempt(None, 1.0, waited_seconds=5.0)]
        provider = FakeStreamingProvider(
            [{"attempts": attempts}, {"content": "a"}, {"done": True, "attempts": attempts}]
        )
        if failed:
            provider.stream_error = LLMProviderError("cut", attempts=attempts)
            provider.fail_after = 2
        with contextlib.suppress(LLMProviderError):
            async for chunk in observe_llm_provider(provider, metrics).stream(MESSAGES):
                if "attempts" in chunk and "done" not in chunk:
                    clock[0] = 107.5  # the first text arrives 0.5 s into the last attempt
        assert {("default-model", "none"): (1, 0.5)} == {
            labels: (count, float(total)) for labels, (count, total) in _ttft(metrics).items()
        }

    async def test_ttft_waits_for_a_delta_with_text(
        self, metrics: MetricSet, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A chunk whose content is empty (a server's role-only chunk, passed on) is no first
        token: the agent sends no token event for it, and the time runs on to the text."""
        clock = [100.0]
        monkeypatch.setattr(llm_stream_module, "perf_counter", lambda: clock[0])
        provider = FakeStreamingProvider([{"content": ""}, {"content": "a"}, {"done": True}])
        async for chunk in observe_llm_provider(provider, metrics).stream(MESSAGES):
            if chunk == {"content": ""}:
                clock[0] = 100.5  # the text comes 0.5 s after the empty chunk
        assert {("default-model", "none"): (1, 0.5)} == {
            labels: (count, float(total)) for labels, (count, total) in _ttft(metrics).items()
        }

    async def test_early_close_counts_once_as_success(self, metrics: MetricSet) -> None:
        """A consumer that stops after one chunk: inner stream closed, one success request."""
        provider = FakeStreamingProvider()
        stream = observe_llm_provider(provider, metrics).stream(MESSAGES, model="asked")
        async with aclosing(stream) as chunks:
            async for _ in chunks:
                break
        assert provider.closed
        ((model, _, _, status),) = _requests(metrics)
        assert ("asked", "success") == (model, status)
        assert {} == _tokens(metrics)
        await stream.aclose()  # closing again changes nothing
        assert 1 == len(_requests(metrics))

    async def test_early_close_counts_the_retries_of_the_first_chunk(
        self, metrics: MetricSet
    ) -> None:
        """Stopped before the last chunk: the retries the first reports are counted."""
        attempts = [LLMAttempt("rate_limit", 0.01), LLMAttempt(None, 0.02)]
        provider = FakeStreamingProvider(
            [{"content": "a", "attempts": attempts}, {"content": "b"}, {"done": True}]
        )
        stream = observe_llm_provider(provider, metrics).stream(MESSAGES, model="asked")
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                if chunk.get("content") == "b":
                    break
        assert ["success"] == [status for _, _, _, status in _requests(metrics)]
        assert {("asked", "none", "rate_limit"): 1} == samples(
            metrics, "taskforce_llm_retries_total"
        )

    @pytest.mark.parametrize("reported_first", [False, True], ids=["no-chunk", "report-chunk"])
    async def test_cancelled_before_any_chunk_counts_the_reported_retries(
        self, metrics: MetricSet, reported_first: bool
    ) -> None:
        """No chunk of the answer read, cancelled (while it retried, or after the retries'
        report while the model thought): no request, as for a cancelled complete(), but the
        report (on the cancellation, or the first chunk) still counts its retries."""
        attempts = [LLMAttempt("rate_limit", 0.01), LLMAttempt(None, 0.02)]
        provider = FakeStreamingProvider(
            [{"attempts": attempts}, {"content": "a"}] if reported_first else None
        )
        if not reported_first:
            provider.chunk_delay = 10
            provider.cancel_attempts = attempts

        async def consume() -> None:
            async for _ in observe_llm_provider(provider, metrics).stream(MESSAGES, model="m"):
                provider.chunk_delay = 10  # the answer is slow to come

        task = asyncio.create_task(consume())
        await provider.waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert {("m", "none", "rate_limit"): 1} == samples(metrics, "taskforce_llm_retries_total")
        assert [] == _requests(metrics)
        assert {} == samples(metrics, "taskforce_llm_request_duration_seconds")
        assert {} == samples(metrics, "taskforce_llm_failures_total")

    @pytest.mark.parametrize("raised", [asyncio.CancelledError(), SystemExit(2)], ids=repr)
    async def test_a_base_exception_of_the_providers_own_is_an_error(
        self, metrics: MetricSet, raised: BaseException
    ) -> None:
        """A CancelledError the provider raised itself (nobody cancelled the caller), or a
        SystemExit, fails the call: the same object comes out, one error, as the agents
        count it."""
        provider = FakeStreamingProvider()
        provider.stream_error = raised
        with pytest.raises(type(raised)) as caught:
            async for _ in observe_llm_provider(provider, metrics).stream(MESSAGES, model="m"):
                pass
        assert raised is caught.value
        assert ["error"] == [status for _, _, _, status in _requests(metrics)]
        assert {("m", "none", "other"): 1} == samples(metrics, "taskforce_llm_failures_total")

    async def test_error_mid_stream(self, metrics: MetricSet) -> None:
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
        ((_, _, _, status),) = _requests(metrics)
        assert "error" == status
        assert 1 == len(_ttft(metrics))

    async def test_error_before_first_chunk(self, metrics: MetricSet) -> None:
        """A stream failing before any chunk: no TTFT, one error request."""
        provider = FakeStreamingProvider()
        provider.stream_error = LLMProviderError("refused")
        with pytest.raises(LLMProviderError):
            async for _ in observe_llm_provider(provider, metrics).stream(MESSAGES):
                pass
        assert {} == _ttft(metrics)
        assert ["error"] == [status for _, _, _, status in _requests(metrics)]

    async def test_cancelled_consumer_counts_once(self, metrics: MetricSet) -> None:
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
        assert ["success"] == [status for _, _, _, status in _requests(metrics)]
        assert not provider.finished

    async def test_stream_agent_type(self, metrics: MetricSet) -> None:
        """A stream inside a mission scope carries the mission's agent_type everywhere."""
        proxy = observe_llm_provider(FakeStreamingProvider(), metrics)
        with mission_scope("s", "m", "legacy"):
            async for _ in proxy.stream(MESSAGES):
                pass
        assert {"legacy"} == {agent for _, agent, _, _ in _requests(metrics)}
        assert {"legacy"} == {agent for _, agent in _ttft(metrics)}
        assert {"legacy"} == set(_packs(metrics))


class TestLLMFaults:
    async def test_broken_metrics_do_not_change_the_call(self) -> None:
        """A raising MetricSet: results unchanged, every fault counted, logged once per stage.

        A call's request, pack and tokens are written together: one fault per call.
        """
        metrics = BrokenMetrics()
        provider = FakeStreamingProvider()
        proxy = observe_llm_provider(provider, metrics)
        with capture_logs() as logs:
            assert provider.answer is await proxy.complete(MESSAGES)
            assert provider.answer is await proxy.complete(MESSAGES)
            assert provider.chunks == [c async for c in proxy.stream(MESSAGES)]
        assert {"llm": 4} == faults(metrics)
        assert [
            ("StreamingLLMProviderProxy", "llm.complete"),
            ("StreamingLLMProviderProxy", "llm.stream"),
            ("StreamingLLMProviderProxy", "llm.ttft"),
        ] == [(log["proxy"], log["stage"]) for log in logs]

    async def test_a_chunk_that_cannot_say_if_it_has_text_is_passed_on(
        self, metrics: MetricSet
    ) -> None:
        """A chunk whose content cannot be read reaches the consumer; the stream ends as it
        would. It is no text delta (the agents fail the call at it): no time to first token,
        and no fault either, as the metrics did nothing wrong."""
        odd = _NoContent(content="hel")
        provider = FakeStreamingProvider([odd, {"done": True, "model": "m-1"}])
        chunks = [c async for c in observe_llm_provider(provider, metrics).stream(MESSAGES)]
        assert provider.chunks == chunks
        assert odd is chunks[0]
        assert [("m-1", "none", "stream", "success")] == _requests(metrics)
        assert {} == faults(metrics)
        assert {} == _ttft(metrics)

    async def test_text_on_the_last_chunk_is_no_first_token(self, metrics: MetricSet) -> None:
        """``content`` on the ``done`` chunk is no delta (the agents send no token event for
        it): a stream whose only text is there has no time to first token."""
        provider = FakeStreamingProvider([{"done": True, "model": "m-1", "content": "hi"}])
        _ = [c async for c in observe_llm_provider(provider, metrics).stream(MESSAGES)]
        assert [("m-1", "none", "stream", "success")] == _requests(metrics)
        assert {} == _ttft(metrics)

    @pytest.mark.parametrize("before", [[], [{"content": "hel"}]], ids=["first", "later"])
    async def test_a_chunk_whose_class_cannot_be_read_is_passed_on(
        self, metrics: MetricSet, before: list[Any]
    ) -> None:
        """A chunk whose ``isinstance`` raises reaches the consumer, which stops at it as the
        agents do; closing the stream raises nothing, and the call is an invalid_response
        (the provider's fault, not the metrics')."""
        odd: Any = Unrepresentable()
        provider = FakeStreamingProvider([*before, odd, {"done": True, "model": "m-1"}])
        got: list[Any] = []
        async with aclosing(observe_llm_provider(provider, metrics).stream(MESSAGES)) as stream:
            async for chunk in stream:
                got.append(chunk)
                if chunk is odd:
                    break
        assert [*before, odd] == got
        assert provider.closed
        assert ["error"] == [labels[3] for labels in _requests(metrics)]
        failures = samples(metrics, "taskforce_llm_failures_total")
        assert ["invalid_response"] == [labels[2] for labels in failures]
        assert {} == faults(metrics)

    async def test_the_agent_fails_at_a_chunk_whose_class_cannot_be_read_as_without_metrics(
        self, metrics: MetricSet
    ) -> None:
        """The lean agent streaming through the proxy fails the call as it does without it."""
        outcomes = []
        for observed in (False, True):
            odd: Any = Unrepresentable()
            provider = FakeStreamingProvider([{"content": "hel"}, odd])
            llm = observe_llm_provider(provider, metrics) if observed else provider
            agent = LeanAgent(llm, FakeRegistry(), stream_llm=True)
            outcome = await agent.run("hi")
            outcomes.append((outcome.status, outcome.error, outcome.error_type))
        expected = (
            "LLM call failed: the provider streamed a chunk that cannot be read (RuntimeError)"
        )
        assert [("failed", expected, "invalid_response")] * 2 == outcomes

    async def test_malformed_messages_are_a_fault(self, metrics: MetricSet) -> None:
        """Messages the pack estimate cannot read: the call still works, the request counts."""
        provider = FakeProvider()
        assert provider.answer is await observe_llm_provider(provider, metrics).complete([1, 2])
        assert {"llm": 1} == faults(metrics)
        assert 1 == len(_requests(metrics))
        assert {} == _packs(metrics)


class TestTokenReports:
    @pytest.mark.parametrize(
        "usage",
        [
            {"prompt_tokens": -10, "completion_tokens": 5},
            {"prompt_tokens": 1.5, "completion_tokens": 5},
            {"prompt_tokens": "10", "completion_tokens": 5},
            {"prompt_tokens": True, "completion_tokens": 5},
            {"prompt_tokens": float("inf"), "completion_tokens": 5},
            {"prompt_tokens": 10, "completion_tokens": float("nan")},
            # past what a sample holds: a scrape could not write it, or promtool read it
            {"prompt_tokens": 10**400, "completion_tokens": 5},
            {"prompt_tokens": 10, "completion_tokens": 10**5000},
            {"prompt_tokens": 2**53 + 1, "completion_tokens": 5},
            # no mapping at all, or one that cannot be read
            "12 tokens",
            [12, 5],
            12,
            RaisingGet(prompt_tokens=12),
        ],
    )
    @pytest.mark.parametrize("success", [True, False])
    async def test_a_count_that_is_not_one_is_a_fault_and_loses_nothing_else(
        self, metrics: MetricSet, usage: Any, success: bool
    ) -> None:
        """Bad token counts or a usage that is no mapping: no tokens written, a fault
        counted; the request, the retry and the failure still are."""
        answer = {
            "success": success,
            "error_type": "timeout",
            "content": "x",
            "model": "m",
            "usage": usage,
            "attempts": [LLMAttempt("rate_limit", 0.01), LLMAttempt(None, 0.01)],
        }
        result = await observe_llm_provider(FakeProvider(answer), metrics).complete(MESSAGES)
        assert answer is result
        assert {} == _tokens(metrics)
        assert {"llm": 1} == faults(metrics)
        assert {("m", "none", "rate_limit"): 1} == samples(metrics, "taskforce_llm_retries_total")
        status = "success" if success else "error"
        assert [("m", "none", "complete", status)] == _requests(metrics)
        failures = {} if success else {("m", "none", "timeout"): 1}
        assert failures == samples(metrics, "taskforce_llm_failures_total")
        assert metrics.render().endswith(b"\n")  # the scrape is still written

    @pytest.mark.parametrize(("first", "second"), [(2**53 - 1, 0), (2**53, 1), (0, 2**53)])
    async def test_counts_up_to_2_to_the_53_are_counts(
        self, metrics: MetricSet, first: int, second: int
    ) -> None:
        """The largest counts a sample holds exactly are written whole, with no fault."""
        usage = {"prompt_tokens": first, "completion_tokens": second}
        answer = {"success": True, "model": "m", "usage": usage}
        await observe_llm_provider(FakeProvider(answer), metrics).complete(MESSAGES)
        written = {k: v for k, v in _tokens(metrics).items() if v}
        assert {k: v for k, v in {"input": first, "output": second}.items() if v} == {
            token_type: value for (_, _, token_type), value in written.items()
        }
        assert {} == faults(metrics)

    async def test_whole_floats_are_counts(self, metrics: MetricSet) -> None:
        """``12.0`` tokens are 12 tokens."""
        answer = {"success": True, "model": "m", "usage": {"prompt_tokens": 12.0}}
        await observe_llm_provider(FakeProvider(answer), metrics).complete(MESSAGES)
        assert 12 == _tokens(metrics)[("m", "none", "input")]
        assert {} == faults(metrics)


class TestOverflowThroughTheProxy:
    async def test_an_overflowed_model_counts_its_overflow_on_every_call(self) -> None:
        """Past the cap a model is 'other' on every call, each call counted as an overflow."""
        metrics = MetricSet(max_label_values=1)
        proxy = observe_llm_provider(FakeProvider(answer={"success": True}), metrics)
        await proxy.complete(MESSAGES, model="first")
        for _ in range(3):
            await proxy.complete(MESSAGES, model="second")
        assert [
            ("first", "none", "complete", "success"),
            *[("other", "none", "complete", "success")] * 3,
        ] == _requests(metrics)
        overflow = samples(metrics, "taskforce_metrics_label_overflow_total")
        assert 3 == overflow[("taskforce_llm_requests_total", "model")]
