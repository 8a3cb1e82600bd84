"""Proxy for the state store: the size of every session state saved or appended to, and errors.

Every ``load``, ``save`` or ``append`` that raises is counted in
the ``STATE_ERRORS`` family by operation (the exception passes through
unchanged): a corrupt file, a full disk or a database that went away shows as a
rate an operator can alert on, whichever store is configured.

After an ``append`` the size is the session's size the store reported; a size that
is not a count (``as_count``: negative, fractional, not finite, past ``MAX_COUNT``,
not a number) is a fault of this proxy, counted and logged once, and not observed:
one infinite size would hold the histogram's sum at ``+Inf`` for good. After a
``save`` it is what ``save`` returned (the bytes the store persisted, per
``StateStoreProtocol``), recorded only after ``save`` succeeded. A store that
returns ``None`` (or anything that is not a count) gets the length in bytes of the
state's JSON text (UTF-8) instead, at the cost of serialising it a second time; a
state that cannot be serialised (the store accepted it anyway) is a fault of this
proxy, counted and logged once.
"""

from __future__ import annotations

import json
from typing import TypeVar

from taskforce.core.interfaces.outcome import is_caller_cancelled
from taskforce.core.interfaces.state import (
    AppendResult,
    MissionRecord,
    SessionState,
    StateStoreProtocol,
)
from taskforce.observability.metrics import COUNT_BITS, MetricSet, as_count
from taskforce.observability.metrics._catalog import STATE_ERRORS, STATE_OPERATIONS, STATE_SIZE
from taskforce.observability.proxies._base import ObservingProxy, report_fault

__all__ = ["StateStoreProxy"]

_StoreT = TypeVar("_StoreT", bound=StateStoreProtocol)


class StateStoreProxy(ObservingProxy[_StoreT]):
    """A state store whose calls report the size of the session's state, and their errors."""

    def __init__(self, wrapped: _StoreT, metrics: MetricSet) -> None:
        """Wrap ``wrapped`` so the sizes of saved states are recorded in ``metrics``.

        Args:
            wrapped: The plain store; it stays reachable as ``__wrapped__``.
            metrics: The container's metric set.
        """
        super().__init__(wrapped, metrics)
        self._self_size = metrics.histogram(STATE_SIZE).labels()
        errors = metrics.counter(STATE_ERRORS)
        # every operation's series exists at 0 from the first scrape, so rate() sees the first error
        self._self_errors = {op: errors.labels(op) for op in STATE_OPERATIONS}

    async def load(self, session_id: str) -> SessionState | None:
        """Load through the wrapped store; a raised error is counted.

        Args:
            session_id: Passed unchanged.

        Returns:
            Exactly what the wrapped store returned.

        Raises:
            Exception: Exactly what the wrapped store raised (the same object).
        """
        try:
            return await self.__wrapped__.load(session_id)
        except BaseException as exc:
            if isinstance(exc, Exception) or not is_caller_cancelled(exc):
                self._self_count_error("load")  # a store's own SystemExit too
            raise

    def _self_count_error(self, operation: str) -> None:
        try:
            self._self_errors[operation].inc()
        except Exception as exc:
            report_fault(self._self_metrics, "StateStoreProxy", f"state.{operation}", exc)

    async def append(self, session_id: str, record: MissionRecord) -> AppendResult:
        """Append through the wrapped store, then record the session's size.

        Args:
            session_id: Passed unchanged.
            record: Passed unchanged.

        Returns:
            Exactly what the wrapped store returned.

        Raises:
            Exception: Exactly what the wrapped store raised (the same object);
                only the error is counted then.
        """
        try:
            appended = await self.__wrapped__.append(session_id, record)
        except BaseException as exc:
            if isinstance(exc, Exception) or not is_caller_cancelled(exc):
                self._self_count_error("append")  # a store's own SystemExit too
            raise
        try:
            size: int | None = appended.size_bytes
            if type(size) is not int or size >> COUNT_BITS:  # not a plain count below 2**53
                size = as_count(size)
            if size is None:
                # named by type: what a store of one's own reports may be too long to print
                kind = type(appended.size_bytes).__name__
                raise ValueError(f"the store reported a size that is not a count ({kind})")
            self._self_size.observe(size)
        except BaseException as exc:  # a size of the store's own may raise SystemExit too
            report_fault(self._self_metrics, "StateStoreProxy", "state.append", exc)
        return appended

    async def save(self, session_id: str, state: SessionState) -> int | None:
        """Save through the wrapped store, then record the state's size.

        Args:
            session_id: Passed unchanged.
            state: Passed unchanged.

        Returns:
            Exactly what the wrapped store returned.

        Raises:
            Exception: Exactly what the wrapped store raised (the same object);
                only the error is counted then.
        """
        try:
            saved = await self.__wrapped__.save(session_id, state)
        except BaseException as exc:
            if isinstance(exc, Exception) or not is_caller_cancelled(exc):
                self._self_count_error("save")  # a store's own SystemExit too
            raise
        try:
            size = as_count(saved)
            if size is None:
                # sort_keys would only cost time: key order does not change the length.
                size = len(json.dumps(state, ensure_ascii=False).encode())
            self._self_size.observe(size)
        except BaseException as exc:  # a state of one's own may raise SystemExit too
            report_fault(self._self_metrics, "StateStoreProxy", "state.save", exc)
        return saved
