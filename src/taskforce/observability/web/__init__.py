"""The web side of the aspect: the ``/metrics`` sub-app and the HTTP metrics middleware."""

from __future__ import annotations

from taskforce.observability.web._app import (
    MetricsMount,
    bearer_token,
    is_authorization_sent,
    make_metrics_app,
    refuse_as_json,
)
from taskforce.observability.web._http import HTTPMetricsMiddleware

__all__ = [
    "HTTPMetricsMiddleware",
    "MetricsMount",
    "bearer_token",
    "is_authorization_sent",
    "make_metrics_app",
    "refuse_as_json",
]
