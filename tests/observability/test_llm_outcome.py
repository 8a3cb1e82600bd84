"""Retries, failures, spend and time to first token, offline, through a container.

The same cases as the integration suite runs against a real OpenAI-compatible server
(429 then 200, 500 three times, 401, a slow first chunk), with ``llm:fail`` and
``llm:delay`` instead of a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.core.interfaces import LLMAttempt
from taskforce.errors import LLMProviderError
from taskforce.observability import instrument
from taskforce.observability.metrics import MetricSet
from tests.observability.metric_samples import faults, histogram, samples, series, value
from tests.observability.proxy_fakes import FakeProvider
from tests.support.odd_values import Unequal

_MODEL = "scripted-1"
_PRICES = {_MODEL: {"input": 2.5, "output": 10.0}}


def _build(tmp_path: Path, **llm: Any) -> Container:
    return build_container(
        Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", llm=llm)
    )


def _count(metrics: MetricSet, name: str, **labels: str) -> float:
    """A counter's value, 0 when the series does not exist."""
    wanted = [s for s in series(metrics, name) if all(s.get(k) == v for k, v in labels.items())]
    return float(sum(value(metrics, name, **s) for s in wanted))


def _ttft(metrics: MetricSet) -> dict[Any, Any]:
    """The lean flow's time-to-first-token histogram of the scripted model."""
    return histogram(
        metrics, "taskforce_llm_time_to_first_token_seconds", model=_MODEL, agent_type="lean"
    )


@pytest.fixture(name="container")
def fixture_container(tmp_path: Path) -> Container:
    return _build(tmp_path, prices=_PRICES)


class TestRetriesAndFailures:
    async def test_rate_limit_then_success(self, container: Container) -> None:
        """A rate-limited attempt, then the answer: one rate_limit retry, one success."""
        assert container.metrics is not None
        result = await container.executor.execute_mission("llm:fail rate_limit\nhello")

        assert "completed" == result.status
        metrics = container.metrics
        assert 1 == _count(metrics, "taskforce_llm_retries_total", error_type="rate_limit")
        assert 1 == _count(metrics, "taskforce_llm_retries_total")
        assert 1 == _count(metrics, "taskforce_llm_requests_total", status="success")
        assert 0 == _count(metrics, "taskforce_llm_requests_total", status="error")
        assert 0 == _count(metrics, "taskforce_llm_failures_total")

    async def test_server_error_three_times(self, container: Container) -> None:
        """Three server errors (max_retries=2): two retries and one failure, all server_error."""
        assert container.metrics is not None
        with capture_logs() as logs:
            result = await container.executor.execute_mission("llm:fail server_error 3")

        assert "failed" == result.status
        metrics = container.metrics
        assert 2 == _count(metrics, "taskforce_llm_retries_total", error_type="server_error")
        assert 1 == _count(
            metrics, "taskforce_llm_failures_total", error_type="server_error", model=_MODEL
        )
        assert 1 == _count(metrics, "taskforce_llm_requests_total", status="error")
        failed = [e["error_type"] for e in logs if e["event"] == "llm.call.failed"]
        assert ["server_error"] == failed

    async def test_auth_is_one_failure_and_no_retry(self, container: Container) -> None:
        """An auth failure: no retry, one failure labelled auth, the same in the log."""
        assert container.metrics is not None
        with capture_logs() as logs:
            await container.executor.execute_mission("llm:fail auth", agent_type="legacy")

        metrics = container.metrics
        assert 0 == _count(metrics, "taskforce_llm_retries_total")
        assert 1 == _count(
            metrics, "taskforce_llm_failures_total", error_type="auth", agent_type="legacy"
        )
        failed = [e["error_type"] for e in logs if e["event"] == "llm.call.failed"]
        assert ["auth"] == failed

    async def test_streamed_failure_is_counted_once(self, container: Container) -> None:
        """A streamed turn that fails counts its retries and one failure, like a plain call."""
        assert container.metrics is not None
        stream = container.executor.execute_mission_streaming("llm:fail timeout 3")
        events = [event async for event in stream]

        result = events[-1].result
        assert result is not None and "failed" == result.status
        metrics = container.metrics
        assert 2 == _count(metrics, "taskforce_llm_retries_total", error_type="timeout")
        assert 1 == _count(metrics, "taskforce_llm_failures_total", error_type="timeout")
        assert 1 == _count(metrics, "taskforce_llm_requests_total", operation="stream")

    @pytest.mark.parametrize("streamed", [False, True], ids=["execute", "stream"])
    @pytest.mark.parametrize(
        "mission", ["llm:fail server_error 3", "llm:fail auth", "llm:error", "tool:x [1]"]
    )
    async def test_a_failed_call_bills_nothing(
        self, container: Container, mission: str, streamed: bool
    ) -> None:
        """A call that fails offline counts no tokens and no spend, as an endpoint that
        answers 500, 401 or 400 reports no usage: the drill shows the provider's numbers."""
        assert container.metrics is not None
        if streamed:
            _ = [e async for e in container.executor.execute_mission_streaming(mission)]
        else:
            await container.executor.execute_mission(mission)

        metrics = container.metrics
        assert 1 == _count(metrics, "taskforce_llm_failures_total")
        assert 0 == _count(metrics, "taskforce_llm_tokens_total")
        assert 0 == _count(metrics, "taskforce_llm_cost_usd_total")


class TestTimeToFirstToken:
    async def test_streamed_mission_records_one_ttft(self, tmp_path: Path) -> None:
        """A streamed lean mission sends tokens and records one TTFT no shorter than the delay."""
        container = _build(tmp_path, scripted_first_chunk_delay_ms=50)
        assert container.metrics is not None

        events = [e async for e in container.executor.execute_mission_streaming("say hello")]

        assert [e for e in events if e.kind == "token"]
        ttft = _ttft(container.metrics)
        assert 1 == ttft["count"]
        assert ttft["sum"] >= 0.05

    async def test_a_slow_first_chunk_after_a_rate_limit_is_the_ttft(
        self, container: Container
    ) -> None:
        """llm:delay after llm:fail holds back the answer, as a server that answers 429, then
        streams a slow first chunk: the time to first token reads the delay, not the 429."""
        assert container.metrics is not None
        mission = "llm:fail rate_limit\nllm:delay 50\nsay hello"

        events = [e async for e in container.executor.execute_mission_streaming(mission)]

        assert [e for e in events if e.kind == "token"]
        ttft = _ttft(container.metrics)
        assert 1 == ttft["count"]
        assert ttft["sum"] >= 0.05
        retries = _count(container.metrics, "taskforce_llm_retries_total", error_type="rate_limit")
        assert 1 == retries

    async def test_plain_path_records_no_ttft(self, container: Container) -> None:
        """/execute keeps complete: no stream, so no time to first token."""
        assert container.metrics is not None
        await container.executor.execute_mission("say hello")

        assert {} == samples(container.metrics, "taskforce_llm_time_to_first_token_seconds")

    async def test_tool_only_turn_has_no_ttft(self, container: Container) -> None:
        """A streamed turn that answers with a tool call alone has no first token."""
        assert container.metrics is not None
        mission = 'tool:calculator {"expression": "1+1"}\ndone'

        _ = [e async for e in container.executor.execute_mission_streaming(mission)]

        ttft = _ttft(container.metrics)
        assert 1 == ttft["count"]  # the final answer's turn, not the tool call's
        assert 2 == _count(container.metrics, "taskforce_llm_requests_total", operation="stream")


class TestSpend:
    async def test_spend_equals_tokens_times_prices(self, container: Container) -> None:
        """Cost is input tokens x input price + output tokens x output price, per million."""
        assert container.metrics is not None
        metrics = container.metrics
        await container.executor.execute_mission('tool:calculator {"expression": "2*3"}\nok')

        tokens_in = _count(metrics, "taskforce_llm_tokens_total", token_type="input")
        tokens_out = _count(metrics, "taskforce_llm_tokens_total", token_type="output")
        spend = value(metrics, "taskforce_llm_cost_usd_total", model=_MODEL, agent_type="lean")
        assert tokens_in > 0 and tokens_out > 0
        assert pytest.approx((tokens_in * 2.5 + tokens_out * 10.0) / 1e6) == spend

    async def test_unpriced_model_has_no_cost_and_is_logged_once(self, tmp_path: Path) -> None:
        """A model without a price: no cost series, llm.price.missing once per model."""
        container = _build(tmp_path, prices={"gpt-4o": {"input": 1, "output": 1}})
        assert container.metrics is not None

        with capture_logs() as logs:
            await container.executor.execute_mission("one")
            await container.executor.execute_mission("two")

        missing = [e for e in logs if e["event"] == "llm.price.missing"]
        assert [(_MODEL, "warning")] == [(e["model"], e["log_level"]) for e in missing]
        assert [] == series(container.metrics, "taskforce_llm_cost_usd_total")

    async def test_unpriced_models_past_the_label_cap_are_logged_once_as_other(self) -> None:
        """A provider that reports a new model on every call: llm.price.missing once per
        model up to metrics.max_label_values, then once as other, as their series are; the
        models remembered stay within that bound."""
        metrics = MetricSet(max_label_values=3, llm_prices={"gpt-4o": (1.0, 1.0)})
        provider = instrument(FakeProvider(), metrics)
        provider.answer = dict(provider.answer)

        with capture_logs() as logs:
            for index in range(6):
                provider.answer["model"] = f"deployment-{index}"
                await provider.complete([{"role": "user", "content": "hi"}])

        missing = [e["model"] for e in logs if e["event"] == "llm.price.missing"]
        assert ["deployment-0", "deployment-1", "deployment-2", "other"] == missing
        assert 4 == len(metrics.unpriced_models)

    async def test_the_model_is_logged_as_its_label_has_it(self) -> None:
        """A model name a provider made up is logged cut to a label's length, never whole."""
        metrics = MetricSet(llm_prices={"gpt-4o": (1.0, 1.0)})
        provider = instrument(FakeProvider(), metrics)
        provider.answer = dict(provider.answer, model="m" * 10_000)

        with capture_logs() as logs:
            await provider.complete([{"role": "user", "content": "hi"}])

        missing = [e["model"] for e in logs if e["event"] == "llm.price.missing"]
        labelled = {labels["model"] for labels in series(metrics, "taskforce_llm_tokens_total")}
        assert ["m" * 128] == missing
        assert {"m" * 128} == labelled

    @pytest.mark.parametrize(
        "reported", ["m" * 200, "lone-\ud800-surrogate"], ids=["long", "surrogate"]
    )
    async def test_a_model_reported_unpriced_is_not_priced_again(self, reported: str) -> None:
        """Without prices, a model already reported unpriced is not looked up again on the
        next calls (the provider is not asked for its model), also when the model is
        remembered as its label has it (cut, a character replaced), not as reported."""

        class AskedProvider(FakeProvider):
            asked = 0

            @property
            def model(self) -> str:  # type: ignore[override]
                self.asked += 1
                return "default-model"

        plain = AskedProvider()
        provider = instrument(plain, MetricSet())
        provider.answer = dict(provider.answer, model=reported)

        with capture_logs() as logs:
            await provider.complete([{"role": "user", "content": "hi"}])
            asked = plain.asked
            for _ in range(3):
                await provider.complete([{"role": "user", "content": "hi"}])

        assert asked == plain.asked
        assert 1 == len([e for e in logs if e["event"] == "llm.price.missing"])

    async def test_no_prices_at_all_is_a_note(self, tmp_path: Path) -> None:
        """Without llm.prices the missing price is logged at info, still once."""
        container = _build(tmp_path)

        with capture_logs() as logs:
            await container.executor.execute_mission("one")

        missing = [e["log_level"] for e in logs if e["event"] == "llm.price.missing"]
        assert ["info"] == missing


class TestBuildInfo:
    def test_llm_provider_label(self, container: Container) -> None:
        """taskforce_build_info carries the configured provider."""
        assert container.metrics is not None
        (labels,) = series(container.metrics, "taskforce_build_info")
        assert "scripted" == labels["llm_provider"]


class TestForeignProviders:
    """What the proxy makes of a provider that is not one of ours."""

    async def test_raised_error_without_attempts_is_one_failure(self) -> None:
        """An error with no attempt report: no retries, one failure of its error type."""
        metrics = MetricSet()
        provider = instrument(
            FakeProvider(error=LLMProviderError("x", error_type="timeout")), metrics
        )

        with pytest.raises(LLMProviderError):
            await provider.complete([{"role": "user", "content": "hi"}])

        assert [] == series(metrics, "taskforce_llm_retries_total")
        assert 1 == _count(metrics, "taskforce_llm_failures_total", error_type="timeout")

    async def test_error_types_outside_the_set_are_other(self) -> None:
        """Attempt and result error types outside the closed set are counted as other."""
        answer = {
            "success": False,
            "error": "boom",
            "error_type": "RateLimitError",
            "attempts": [LLMAttempt("quota", 0.1), LLMAttempt(None, 0.1)],  # type: ignore[arg-type]
        }
        metrics = MetricSet()
        provider = instrument(FakeProvider(answer=answer), metrics)

        await provider.complete([{"role": "user", "content": "hi"}])

        assert 1 == _count(metrics, "taskforce_llm_retries_total", error_type="other")
        assert 1 == _count(metrics, "taskforce_llm_failures_total", error_type="other")

    async def test_an_attempt_error_type_of_the_providers_own_text_class(self) -> None:
        """An attempt's error_type that is a text of the provider's own class, whose ==
        raises, is read as the plain text it holds, as a result's is: the retry is counted
        under it, the spend too, and nothing faults."""
        answer = dict(
            FakeProvider().answer,
            attempts=[LLMAttempt(Unequal("rate_limit"), 0.1), LLMAttempt(None, 0.1)],  # type: ignore[arg-type]
        )
        metrics = MetricSet(llm_prices={"reported-model": (1.0, 1.0)})
        provider = instrument(FakeProvider(answer=answer), metrics)

        await provider.complete([{"role": "user", "content": "hi"}])

        assert 1 == _count(metrics, "taskforce_llm_retries_total", error_type="rate_limit")
        assert 0 < _count(metrics, "taskforce_llm_cost_usd_total")
        assert {} == faults(metrics)

    @pytest.mark.parametrize("attempts", [None, 5, "abc", {"error_type": "timeout"}])
    async def test_attempt_report_that_is_not_a_list_is_no_report(self, attempts: Any) -> None:
        """A raised error or a failed result with a malformed report: one failure, no fault."""
        error = LLMProviderError("x", error_type="rate_limit")
        error.attempts = attempts
        answer = {"success": False, "error": "x", "error_type": "auth", "attempts": attempts}
        metrics = MetricSet()
        raising = instrument(FakeProvider(error=error), metrics)
        failing = instrument(FakeProvider(answer=answer), metrics)

        with pytest.raises(LLMProviderError):
            await raising.complete([{"role": "user", "content": "hi"}])
        await failing.complete([{"role": "user", "content": "hi"}])

        assert [] == series(metrics, "taskforce_llm_retries_total")
        assert 1 == _count(metrics, "taskforce_llm_failures_total", error_type="rate_limit")
        assert 1 == _count(metrics, "taskforce_llm_failures_total", error_type="auth")
        assert {} == faults(metrics)
