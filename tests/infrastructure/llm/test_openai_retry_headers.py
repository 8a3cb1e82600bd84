"""What a server says about a retry, through the OpenAI-compatible provider over real HTTP.

``x-should-retry`` overrides the error type's rule (within the attempt budget; never for
``auth`` and ``bad_request``, which are not retried) and
``retry-after-ms`` comes before ``Retry-After``, on an error status, before a stream's
first chunk, and on a 2xx that holds an error object. The attempts made, the waits asked
(the ``delay_seconds`` of ``llm.request.retry``), the attempt report and the metrics the
LLM proxy counts from it must all agree.
"""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from taskforce.core.domain.prompts import MISSION_PREFIX
from taskforce.errors import LLMProviderError
from taskforce.infrastructure.llm import OpenAICompatibleProvider
from taskforce.observability import observe_llm_provider
from taskforce.observability.metrics import MetricSet
from tests.observability.metric_samples import samples
from tests.support.fake_openai import FakeOpenAIServer

pytestmark = pytest.mark.integration

#: The longest wait a server may ask for here: a longer one is cut to it.
_CAP = 0.05


def _mission() -> list[Any]:
    return [{"role": "user", "content": MISSION_PREFIX + "hi"}]


async def _call(provider: OpenAICompatibleProvider, route: str) -> tuple[bool, Any, Any]:
    """Call ``route`` (``complete`` or ``stream``) through the LLM proxy; return whether it
    succeeded, its attempt report, and the metrics the proxy recorded."""
    metrics = MetricSet()
    proxy: Any = observe_llm_provider(provider, metrics)
    if route == "complete":
        result = await proxy.complete(_mission())
        return result["success"], result["attempts"], metrics
    try:
        chunks = [chunk async for chunk in proxy.stream(_mission())]
    except LLMProviderError as exc:
        return False, (exc.attempts, exc.retryable), metrics
    return True, chunks[-1]["attempts"], metrics


def _provider(base_url: str, max_retries: int = 2) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        "m",
        base_url,
        api_key="sk-test",
        max_retries=max_retries,
        backoff_base_seconds=0.0,
        retry_after_max_seconds=_CAP,
    )


def _retries(logs: list[Any]) -> list[tuple[Any, Any]]:
    """The retries logged: (the wait asked, the error type of the attempt before)."""
    return [
        (e["delay_seconds"], e["error_type"]) for e in logs if e["event"] == "llm.request.retry"
    ]


def _counted(metrics: MetricSet, name: str) -> dict[str, Any]:
    """A metric of the call's series: error_type -> count."""
    return {labels[-1]: count for labels, count in samples(metrics, name).items()}


@pytest.mark.parametrize("route", ["complete", "stream"])
class TestShouldRetry:
    @pytest.mark.parametrize(("status", "error_type"), [(429, "rate_limit"), (503, "server_error")])
    async def test_false_on_a_retryable_status_stops_the_retries(
        self, base_url: str, fake: FakeOpenAIServer, route: str, status: int, error_type: str
    ) -> None:
        """``x-should-retry: false`` on a 429 or 5xx: one attempt, no retry; the call fails
        with its own error type, in the report, the error and the metrics alike."""
        fake.fail_next(3, status, headers={"x-should-retry": "false"})

        async with _provider(base_url) as provider:
            with structlog.testing.capture_logs() as logs:
                succeeded, report, metrics = await _call(provider, route)

        assert False is succeeded
        attempts = report if route == "complete" else report[0]
        assert [error_type] == [a.error_type for a in attempts]
        if route == "stream":
            assert False is report[1]  # the server said no: not retryable
        assert 1 == len(fake.requests)
        assert [] == _retries(logs)
        assert {} == _counted(metrics, "taskforce_llm_retries_total")
        assert {error_type: 1} == _counted(metrics, "taskforce_llm_failures_total")

    @pytest.mark.parametrize(
        ("status", "error_type"), [(400, "bad_request"), (401, "auth"), (403, "auth")]
    )
    async def test_true_never_retries_auth_or_bad_request(
        self, base_url: str, fake: FakeOpenAIServer, route: str, status: int, error_type: str
    ) -> None:
        """``x-should-retry: true`` on a 400, 401 or 403: still one attempt (issue 9: an
        ``auth`` or ``bad_request`` error is never retried); the call fails with its own
        error type, a stream's error not retryable, no retry in the log or the metrics."""
        fake.fail_next(3, status, headers={"x-should-retry": "true"})

        async with _provider(base_url) as provider:
            with structlog.testing.capture_logs() as logs:
                succeeded, report, metrics = await _call(provider, route)

        assert False is succeeded
        attempts = report if route == "complete" else report[0]
        assert [error_type] == [a.error_type for a in attempts]
        if route == "stream":
            assert False is report[1]
        assert 1 == len(fake.requests)
        assert [] == _retries(logs)
        assert {} == _counted(metrics, "taskforce_llm_retries_total")
        assert {error_type: 1} == _counted(metrics, "taskforce_llm_failures_total")

    @pytest.mark.parametrize("value", ["TRUE", "yes", "1", ""])
    async def test_any_other_value_is_ignored(
        self, base_url: str, fake: FakeOpenAIServer, route: str, value: str
    ) -> None:
        """A value other than ``true`` or ``false``: the status decides (a 429 is retried,
        a 400 is not)."""
        fake.fail_next(1, 429, headers={"x-should-retry": value})
        fake.fail_next(1, 400, headers={"x-should-retry": value})

        async with _provider(base_url) as provider:
            succeeded, report, _ = await _call(provider, route)

        assert False is succeeded
        attempts = report if route == "complete" else report[0]
        assert ["rate_limit", "bad_request"] == [a.error_type for a in attempts]


@pytest.mark.parametrize("route", ["complete", "stream"])
class TestRetryAfterMs:
    @pytest.mark.parametrize(
        ("headers", "waited"),
        [
            ({"retry-after-ms": "20", "retry-after": "600"}, 0.02),
            ({"retry-after-ms": "600000", "retry-after": "0.01"}, _CAP),  # cut to the cap
            ({"retry-after-ms": "soon", "retry-after": "0.03"}, 0.03),  # unreadable: ignored
            ({"retry-after-ms": "-20", "retry-after": "0.03"}, 0.03),
            ({"retry-after-ms": "0"}, 0.0),  # no wait beyond the backoff
        ],
        ids=["before-retry-after", "capped", "unreadable", "negative", "zero"],
    )
    async def test_retry_after_ms_is_the_wait_when_readable(
        self,
        base_url: str,
        fake: FakeOpenAIServer,
        route: str,
        headers: dict[str, str],
        waited: float,
    ) -> None:
        """The wait before the retry of a 429 is its ``retry-after-ms`` when readable (cut
        to retry_after_max_seconds), else its ``Retry-After``."""
        fake.fail_next(1, 429, headers=headers)

        async with _provider(base_url) as provider:
            with structlog.testing.capture_logs() as logs:
                succeeded, attempts, metrics = await _call(provider, route)

        assert True is succeeded
        assert ["rate_limit", None] == [a.error_type for a in attempts]
        assert [(waited, "rate_limit")] == _retries(logs)
        assert {"rate_limit": 1} == _counted(metrics, "taskforce_llm_retries_total")


_ERROR_OBJECT = {"error": {"code": 429, "message": "slow down"}}


def _error_in_a_2xx(fake: FakeOpenAIServer, route: str, headers: dict[str, str]) -> None:
    """Answer the next request 200 with a 429 error object: in its stream, or as its body."""
    if route == "stream":
        fake.stream_next([_ERROR_OBJECT], headers=headers)
    else:
        fake.respond_next(_ERROR_OBJECT, headers=headers)


@pytest.mark.parametrize("route", ["complete", "stream"])
class TestErrorObjectInA2xx:
    async def test_should_retry_false_stops_the_retries(
        self, base_url: str, fake: FakeOpenAIServer, route: str
    ) -> None:
        """A 429 error object in a 2xx whose headers say ``x-should-retry: false``: one
        attempt, a ``rate_limit`` failure."""
        _error_in_a_2xx(fake, route, {"x-should-retry": "false"})

        async with _provider(base_url) as provider:
            with structlog.testing.capture_logs() as logs:
                succeeded, report, metrics = await _call(provider, route)

        assert False is succeeded
        attempts = report if route == "complete" else report[0]
        assert ["rate_limit"] == [a.error_type for a in attempts]
        assert [] == _retries(logs)
        assert {"rate_limit": 1} == _counted(metrics, "taskforce_llm_failures_total")

    async def test_retry_after_ms_is_the_wait(
        self, base_url: str, fake: FakeOpenAIServer, route: str
    ) -> None:
        """Its ``retry-after-ms`` is waited for before the retry, as a real 429's."""
        _error_in_a_2xx(fake, route, {"retry-after-ms": "20", "retry-after": "600"})

        async with _provider(base_url) as provider:
            with structlog.testing.capture_logs() as logs:
                succeeded, attempts, _ = await _call(provider, route)

        assert True is succeeded
        assert ["rate_limit", None] == [a.error_type for a in attempts]
        assert [(0.02, "rate_limit")] == _retries(logs)
