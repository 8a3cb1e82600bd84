"""Fixtures of the observability tests: a fresh metric set, and a fresh fault log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskforce.observability import _faults
from taskforce.observability.metrics import MetricSet


@pytest.fixture(autouse=True, name="_fresh_fault_log")
def fixture_fresh_fault_log() -> Iterator[None]:
    """Each test sees every fault logged afresh (the log-once set is process-wide)."""
    _faults._forget_logged_faults()
    yield
    _faults._forget_logged_faults()


@pytest.fixture(name="metrics")
def fixture_metrics() -> MetricSet:
    """A fresh metric set, with its own registry, for every test."""
    return MetricSet()
