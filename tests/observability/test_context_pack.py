"""The context-pack estimate: short conversations counted whole, long ones where they grew.

Measured through the LLM proxy, which counts the messages (``record_call``) with
a ``PackEstimator`` remembering long conversations: each call's estimate is what
it added to the two pack histograms of a real registry.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from taskforce.core.interfaces.context import enter_mission, exit_mission
from taskforce.observability import MetricSet, observe_llm_provider
from taskforce.observability.metrics._catalog import CONTEXT_PACK_MESSAGES, CONTEXT_PACK_TOKENS
from taskforce.observability.proxies._context_pack import SCAN_LIMIT, PackEstimator, estimate_tokens
from tests.observability.proxy_fakes import FakeProvider


class _CountingMessage(dict[str, Any]):
    """A message that counts how often its content is read."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        _CountingMessage.reads += 1
        return super().get(key, default)


def _message(content: str | None) -> _CountingMessage:
    return _CountingMessage(role="user", content=content)


def _long(*tail: _CountingMessage) -> list[_CountingMessage]:
    """A conversation past ``SCAN_LIMIT``: ``SCAN_LIMIT`` messages of 4 chars, then ``tail``."""
    return [_message("z" * 4) for _ in range(SCAN_LIMIT)] + list(tail)


_HEAD = SCAN_LIMIT * 4  # the characters of _long()'s first messages


class _Estimates:
    """Sends conversations through one LLM proxy and reads what each call observed."""

    def __init__(self) -> None:
        self.metrics = MetricSet()
        self.proxy = observe_llm_provider(FakeProvider(), self.metrics)

    def _sums(self) -> tuple[int, int]:
        messages = self.metrics.histogram(CONTEXT_PACK_MESSAGES).labels("none")
        tokens = self.metrics.histogram(CONTEXT_PACK_TOKENS).labels("none")
        return int(messages.sum), int(tokens.sum)

    async def of(self, sent: Any) -> tuple[int, int]:
        """``(messages, estimated tokens)`` of one ``complete`` call sending ``sent``."""
        before = self._sums()
        await self.proxy.complete(sent)
        after = self._sums()
        return after[0] - before[0], after[1] - before[1]


@pytest.fixture(name="estimates")
def fixture_estimates() -> _Estimates:
    return _Estimates()


class TestPackEstimate:
    async def test_first_call_counts_every_message(self, estimates: _Estimates) -> None:
        """Messages and chars / 4 rounded up; a message without content adds nothing."""
        sent = [_message("x" * 40), _message("y" * 21), _message(None)]
        assert (3, estimate_tokens(61)) == await estimates.of(sent)

    async def test_a_grown_conversation_reads_only_the_new_messages(
        self, estimates: _Estimates
    ) -> None:
        """Appending to the same list: the next estimate reads the appended messages only."""
        conversation = [_message("a" * 100) for _ in range(200)]
        await estimates.of(conversation)
        conversation += [_message("b" * 8), _message("c" * 8)]
        _CountingMessage.reads = 0
        assert (202, estimate_tokens(200 * 100 + 16)) == await estimates.of(conversation)
        assert 2 == _CountingMessage.reads

    async def test_a_short_conversation_is_counted_whole_each_time(
        self, estimates: _Estimates
    ) -> None:
        """Up to SCAN_LIMIT messages, every call reads every message (nothing is remembered)."""
        conversation = [_message("a" * 8) for _ in range(SCAN_LIMIT)]
        await estimates.of(conversation)
        _CountingMessage.reads = 0
        assert (SCAN_LIMIT, estimate_tokens(8 * SCAN_LIMIT)) == await estimates.of(conversation)
        assert SCAN_LIMIT == _CountingMessage.reads

    async def test_a_rewritten_conversation_is_counted_again(self, estimates: _Estimates) -> None:
        """A list whose first or last counted message changed is counted from the start."""
        conversation = _long(_message("a" * 8), _message("b" * 8))
        await estimates.of(conversation)
        conversation[-1] = _message("c" * 80)
        assert (SCAN_LIMIT + 2, estimate_tokens(_HEAD + 88)) == await estimates.of(conversation)
        conversation[0] = _message("")
        expected = (SCAN_LIMIT + 2, estimate_tokens(_HEAD - 4 + 88))
        assert expected == await estimates.of(conversation)

    async def test_a_shorter_conversation_is_counted_again(self, estimates: _Estimates) -> None:
        """A list that lost messages is counted from the start."""
        conversation = _long(*[_message("a" * 8) for _ in range(5)])
        await estimates.of(conversation)
        del conversation[SCAN_LIMIT + 2 :]
        assert (SCAN_LIMIT + 2, estimate_tokens(_HEAD + 16)) == await estimates.of(conversation)

    async def test_separate_conversations_do_not_mix(self, estimates: _Estimates) -> None:
        """Two lists alternate (two missions on one provider): each keeps its own count."""
        first, second = _long(_message("a" * 4)), _long(_message("b" * 40))
        for _ in range(3):
            assert (SCAN_LIMIT + 1, estimate_tokens(_HEAD + 4)) == await estimates.of(first)
            assert (SCAN_LIMIT + 1, estimate_tokens(_HEAD + 40)) == await estimates.of(second)

    async def test_empty_and_generate(self, estimates: _Estimates) -> None:
        """No message is (0, 0); generate is one message of prompt plus context."""
        assert (0, 0) == await estimates.of([])
        assert (1, 10) == PackEstimator.prompt("p" * 30, {"k": "v"})


class TestPackEstimator:
    def test_resume_only_the_same_list_grown(self) -> None:
        """resume gives the remembered count for the same list grown, else (0, 0)."""
        packs = PackEstimator()
        conversation = _long(_message("a" * 8))
        assert (0, 0) == packs.resume(conversation)
        packs.remember(conversation, 72)
        conversation.append(_message("b"))
        assert (SCAN_LIMIT + 1, 72) == packs.resume(conversation)
        assert (0, 0) == packs.resume(list(reversed(conversation)))


async def _call_in_mission(estimates: _Estimates, mission_id: str, sent: Any) -> None:
    tokens = enter_mission("s1", mission_id, "lean")
    try:
        await estimates.proxy.complete(sent)
    finally:
        exit_mission(tokens)


class TestWhatIsKept:
    """The estimator keeps a mission's messages alive only while they may be called again."""

    async def test_the_next_mission_lets_the_last_ones_messages_go(
        self, estimates: _Estimates
    ) -> None:
        """A finished mission's long conversation is not held once the task's next mission calls."""
        conversation = _long(_message("a tool's whole output " * 100))
        first, last = weakref.ref(conversation[0]), weakref.ref(conversation[-1])
        await _call_in_mission(estimates, "m1", conversation)
        del conversation
        await _call_in_mission(estimates, "m2", _long(_message("b")))
        gc.collect()
        assert (None, None) == (first(), last())

    async def test_a_mission_task_takes_its_messages_along(self, estimates: _Estimates) -> None:
        """A mission run in a task of its own (as the service runs them) leaves nothing held."""
        conversation = _long(_message("c" * 1000))
        last = weakref.ref(conversation[-1])
        await asyncio.create_task(_call_in_mission(estimates, "m1", conversation))
        del conversation
        await asyncio.sleep(0)  # the loop lets the finished task go
        gc.collect()
        assert last() is None

    async def test_a_mission_still_resumes_where_it_counted(self, estimates: _Estimates) -> None:
        """Within one mission a grown conversation reads only its new messages."""
        conversation = _long(_message("d"))
        await _call_in_mission(estimates, "m1", conversation)
        conversation.append(_message("e"))
        _CountingMessage.reads = 0
        await _call_in_mission(estimates, "m1", conversation)
        assert 1 == _CountingMessage.reads
