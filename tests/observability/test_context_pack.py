"""The context-pack estimate: short conversations counted whole, long ones where they grew."""

from __future__ import annotations

from typing import Any

from taskforce.observability.proxies._context_pack import SCAN_LIMIT, PackEstimator, estimate_tokens


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


class TestPackEstimator:
    def test_first_call_counts_every_message(self) -> None:
        """Messages and chars / 4 rounded up; a message without content adds nothing."""
        sent = [_message("x" * 40), _message("y" * 21), _message(None)]
        assert (3, estimate_tokens(61)) == PackEstimator().messages(sent)

    def test_a_grown_conversation_reads_only_the_new_messages(self) -> None:
        """Appending to the same list: the next estimate reads the appended messages only."""
        estimator = PackEstimator()
        conversation = [_message("a" * 100) for _ in range(200)]
        estimator.messages(conversation)
        conversation += [_message("b" * 8), _message("c" * 8)]
        _CountingMessage.reads = 0
        assert (202, estimate_tokens(200 * 100 + 16)) == estimator.messages(conversation)
        assert 2 == _CountingMessage.reads

    def test_a_short_conversation_is_counted_whole_each_time(self) -> None:
        """Up to SCAN_LIMIT messages, every call reads every message (nothing is remembered)."""
        estimator = PackEstimator()
        conversation = [_message("a" * 8) for _ in range(SCAN_LIMIT)]
        estimator.messages(conversation)
        _CountingMessage.reads = 0
        assert (SCAN_LIMIT, estimate_tokens(8 * SCAN_LIMIT)) == estimator.messages(conversation)
        assert SCAN_LIMIT == _CountingMessage.reads

    def test_a_rewritten_conversation_is_counted_again(self) -> None:
        """A list whose first or last counted message changed is counted from the start."""
        estimator = PackEstimator()
        conversation = _long(_message("a" * 8), _message("b" * 8))
        estimator.messages(conversation)
        conversation[-1] = _message("c" * 80)
        assert (SCAN_LIMIT + 2, estimate_tokens(_HEAD + 88)) == estimator.messages(conversation)
        conversation[0] = _message("")
        assert (SCAN_LIMIT + 2, estimate_tokens(_HEAD - 4 + 88)) == estimator.messages(conversation)

    def test_a_shorter_conversation_is_counted_again(self) -> None:
        """A list that lost messages is counted from the start."""
        estimator = PackEstimator()
        conversation = _long(*[_message("a" * 8) for _ in range(5)])
        estimator.messages(conversation)
        del conversation[SCAN_LIMIT + 2 :]
        assert (SCAN_LIMIT + 2, estimate_tokens(_HEAD + 16)) == estimator.messages(conversation)

    def test_separate_conversations_do_not_mix(self) -> None:
        """Two lists alternate (two missions on one provider): each keeps its own count."""
        estimator = PackEstimator()
        first, second = _long(_message("a" * 4)), _long(_message("b" * 40))
        for _ in range(3):
            assert (SCAN_LIMIT + 1, estimate_tokens(_HEAD + 4)) == estimator.messages(first)
            assert (SCAN_LIMIT + 1, estimate_tokens(_HEAD + 40)) == estimator.messages(second)

    def test_empty_and_generate(self) -> None:
        """No message is (0, 0); generate is one message of prompt plus context."""
        assert (0, 0) == PackEstimator().messages([])
        assert (1, 10) == PackEstimator.prompt("p" * 30, {"k": "v"})
