"""Transitional alias: ``MetricSet`` lives in :mod:`taskforce.observability.metrics`."""

from __future__ import annotations

from taskforce.observability.metrics import MetricSet

__all__ = ["MetricSet"]
