"""The observability aspect: metrics proxies woven in at container build, and logging set-up.

``metrics/`` holds the catalog, its families and the scrape; ``proxies/`` the adapters
that record; ``web/`` the ``/metrics`` app and the HTTP middleware; ``logs/`` the
structlog set-up. Nothing outside the container (and the app factory, for ``/metrics`` and
logging) imports this package; agents, tools and providers never do.
"""

from __future__ import annotations

from taskforce.core.interfaces.context import (
    current_agent_type,
    current_mission_id,
    current_session_id,
    mission_scope,
)
from taskforce.observability.logs import configure_logging, share_log_stream
from taskforce.observability.metrics import MetricSet, count_gc_from_here, observe_process
from taskforce.observability.proxies import (
    ExecutorProxy,
    LLMProviderProxy,
    ObservedStream,
    ObservingProxy,
    StateStoreProxy,
    StreamingLLMProviderProxy,
    ToolProxy,
    ToolRegistryProxy,
    instrument,
    observe_llm_provider,
    uninstrument,
    weave,
    weave_executor,
)
from taskforce.observability.web import (
    HTTPMetricsMiddleware,
    MetricsMount,
    make_metrics_app,
    refuse_as_json,
)

__all__ = [
    "ExecutorProxy",
    "HTTPMetricsMiddleware",
    "LLMProviderProxy",
    "MetricSet",
    "MetricsMount",
    "ObservedStream",
    "ObservingProxy",
    "StateStoreProxy",
    "StreamingLLMProviderProxy",
    "ToolProxy",
    "ToolRegistryProxy",
    "configure_logging",
    "count_gc_from_here",
    "current_agent_type",
    "current_mission_id",
    "current_session_id",
    "instrument",
    "make_metrics_app",
    "mission_scope",
    "observe_llm_provider",
    "observe_process",
    "refuse_as_json",
    "share_log_stream",
    "uninstrument",
    "weave",
    "weave_executor",
]
