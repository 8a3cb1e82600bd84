"""Proxies: the wrapt adapters that observe the executor, providers, tools and state store.

:func:`weave` and :func:`weave_executor` apply them once, at container build time;
each proxy looks up the children of the families it records and writes to them.
"""

from __future__ import annotations

from taskforce.observability.proxies._base import ObservingProxy
from taskforce.observability.proxies._executor import ExecutorProxy
from taskforce.observability.proxies._llm import LLMProviderProxy
from taskforce.observability.proxies._llm_stream import (
    ObservedStream,
    StreamingLLMProviderProxy,
    observe_llm_provider,
)
from taskforce.observability.proxies._state import StateStoreProxy
from taskforce.observability.proxies._tools import ToolProxy, ToolRegistryProxy
from taskforce.observability.proxies._weave import instrument, uninstrument, weave, weave_executor

__all__ = [
    "ExecutorProxy",
    "LLMProviderProxy",
    "ObservedStream",
    "ObservingProxy",
    "StateStoreProxy",
    "StreamingLLMProviderProxy",
    "ToolProxy",
    "ToolRegistryProxy",
    "instrument",
    "observe_llm_provider",
    "uninstrument",
    "weave",
    "weave_executor",
]
