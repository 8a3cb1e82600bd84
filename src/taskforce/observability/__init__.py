"""The observability aspect: metrics proxies woven in at container build, and logging set-up.

Nothing outside the container (and the app factory, for ``/metrics`` and
logging) imports this package; agents, tools and providers never do.
"""

from __future__ import annotations

from taskforce.core.interfaces.context import (
    current_agent_type,
    current_mission_id,
    current_session_id,
    mission_scope,
)
from taskforce.observability._asgi import MetricsMount, make_metrics_app
from taskforce.observability._http import HTTPMetricsMiddleware
from taskforce.observability._logging import configure_logging
from taskforce.observability._proxies_executor import ExecutorProxy
from taskforce.observability._proxies_llm import (
    LLMProviderProxy,
    StreamingLLMProviderProxy,
    observe_llm_provider,
)
from taskforce.observability._proxies_state import StateStoreProxy
from taskforce.observability._proxies_tools import ToolProxy, ToolRegistryProxy
from taskforce.observability._proxy_base import ObservingProxy
from taskforce.observability._weave import instrument, uninstrument, weave, weave_executor
from taskforce.observability.metrics import MetricSet, observe_process

__all__ = [
    "ExecutorProxy",
    "HTTPMetricsMiddleware",
    "LLMProviderProxy",
    "MetricSet",
    "MetricsMount",
    "ObservingProxy",
    "StateStoreProxy",
    "StreamingLLMProviderProxy",
    "ToolProxy",
    "ToolRegistryProxy",
    "configure_logging",
    "current_agent_type",
    "current_mission_id",
    "current_session_id",
    "instrument",
    "make_metrics_app",
    "mission_scope",
    "observe_llm_provider",
    "observe_process",
    "uninstrument",
    "weave",
    "weave_executor",
]
