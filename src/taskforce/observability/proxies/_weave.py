"""The weave: wrap the container's dependencies in observing proxies, and the undo path.

The container calls :func:`weave` and :func:`weave_executor` once, at build
time and only when metrics are enabled; nothing else in taskforce creates
proxies. The proxy class is chosen by what the object can do (its protocol),
so any object that satisfies a protocol, a user's own tool or provider
included, is observed the same way.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from taskforce.core.interfaces.executor import ExecutorProtocol
from taskforce.core.interfaces.jsonable import MAX_RESULT_DEPTH
from taskforce.core.interfaces.llm import LLMProviderProtocol
from taskforce.core.interfaces.state import StateStoreProtocol
from taskforce.core.interfaces.tools import ToolProtocol, ToolRegistryProtocol
from taskforce.observability._faults import count_log_faults_in
from taskforce.observability.metrics import MetricSet
from taskforce.observability.proxies._base import ObservingProxy, is_observing_proxy
from taskforce.observability.proxies._executor import ExecutorProxy
from taskforce.observability.proxies._llm_stream import observe_llm_provider
from taskforce.observability.proxies._state import StateStoreProxy
from taskforce.observability.proxies._tools import ToolProxy, ToolRegistryProxy

__all__ = ["instrument", "uninstrument", "weave", "weave_executor"]

_T = TypeVar("_T")
_LLMT = TypeVar("_LLMT", bound=LLMProviderProtocol)
_RegistryT = TypeVar("_RegistryT", bound=ToolRegistryProtocol)
_StoreT = TypeVar("_StoreT", bound=StateStoreProtocol)
_ExecutorT = TypeVar("_ExecutorT", bound=ExecutorProtocol)


def _observe(obj: Any, metrics: MetricSet, max_result_depth: int) -> ObservingProxy[Any]:
    # Most specific protocol first: a registry is checked before a tool, an
    # executor before anything else (none of these method sets overlap today).
    if isinstance(obj, ExecutorProtocol):
        return ExecutorProxy(obj, metrics)
    if isinstance(obj, ToolRegistryProtocol):
        return ToolRegistryProxy(obj, metrics, max_result_depth=max_result_depth)
    if isinstance(obj, LLMProviderProtocol):
        return observe_llm_provider(obj, metrics)
    if isinstance(obj, StateStoreProtocol):
        return StateStoreProxy(obj, metrics)
    if isinstance(obj, ToolProtocol):
        return ToolProxy(obj, metrics, max_result_depth=max_result_depth)
    raise TypeError(
        f"cannot instrument {type(obj).__qualname__!r}: it is not an executor, tool registry, "
        "LLM provider, state store or tool"
    )


def instrument(obj: _T, metrics: MetricSet, *, max_result_depth: int = MAX_RESULT_DEPTH) -> _T:
    """Wrap ``obj`` in the observing proxy that matches its protocol.

    Args:
        obj: An executor, tool registry, LLM provider, state store or tool.
        metrics: The container's metric set.
        max_result_depth: For a tool or a registry: the deepest result a tool call may
            return before it counts as ``invalid_result`` (``agent.max_result_depth``).

    Returns:
        The proxy, typed as the object it stands for; ``obj`` itself when it
        is already observed (no double counting).

    Raises:
        TypeError: ``obj`` satisfies none of those protocols.
    """
    if is_observing_proxy(obj):
        return obj
    return cast(_T, _observe(obj, metrics, max_result_depth))


def uninstrument(obj: _T) -> _T:
    """Undo :func:`instrument`.

    Args:
        obj: An observed object, or a plain one.

    Returns:
        The plain object behind the proxy; ``obj`` itself when it is plain.
    """
    if isinstance(obj, ObservingProxy):
        return cast(_T, obj.__wrapped__)
    return obj


def weave(
    *,
    llm_provider: _LLMT,
    tool_registry: _RegistryT,
    state_store: _StoreT,
    metrics: MetricSet,
    max_result_depth: int = MAX_RESULT_DEPTH,
) -> tuple[_LLMT, _RegistryT, _StoreT]:
    """Wrap the dependencies the executor is built from.

    From then on ``metrics`` also counts the log lines the process cannot write
    (stage ``log``): the log sink is the process's, like the container.

    Args:
        llm_provider: The provider the agents call.
        tool_registry: The registry the agents take tools from.
        state_store: The store sessions are saved to.
        metrics: The container's metric set.
        max_result_depth: The deepest result a tool call may return before it counts as
            ``invalid_result``: the agents' ``agent.max_result_depth``, so the metrics
            say what the mission's result says.

    Returns:
        ``(llm_provider, tool_registry, state_store)``, each observed.

    Raises:
        TypeError: An object does not satisfy its protocol.
    """
    count_log_faults_in(metrics)
    return (
        _instrument_as(llm_provider, LLMProviderProtocol, metrics),
        _instrument_as(tool_registry, ToolRegistryProtocol, metrics, max_result_depth),
        _instrument_as(state_store, StateStoreProtocol, metrics),
    )


def weave_executor(executor: _ExecutorT, metrics: MetricSet) -> _ExecutorT:
    """Wrap the executor, the mission boundary (after it was built from woven parts).

    Args:
        executor: The executor.
        metrics: The container's metric set.

    Returns:
        The observed executor.

    Raises:
        TypeError: ``executor`` does not satisfy ``ExecutorProtocol``.
    """
    return _instrument_as(executor, ExecutorProtocol, metrics)


def _instrument_as(
    obj: _T, protocol: type[Any], metrics: MetricSet, max_result_depth: int = MAX_RESULT_DEPTH
) -> _T:
    if not isinstance(obj, protocol):
        raise TypeError(f"{type(obj).__qualname__!r} does not satisfy {protocol.__name__}")
    return instrument(obj, metrics, max_result_depth=max_result_depth)
