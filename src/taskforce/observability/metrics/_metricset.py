"""The metric set: one family per catalog metric, the label guard, and the scrape.

A ``MetricSet`` belongs to one container. It builds a family for every entry of the
catalog, mirrors them on its own aioprometheus ``Registry`` (through the adapter),
and renders them. Code that records asks it for a family by spec
(``metrics.counter(TOOL_CALLS)``) and keeps the family or the children it returns.

Hazard: no locks anywhere on the write path. Record and render on the event-loop
thread; :meth:`MetricSet.render_async` yields to the loop between slices of a
scrape instead of holding it for the whole render.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import platform
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from operator import attrgetter
from typing import Any, Literal, cast

from taskforce.core.interfaces.llm import LLM_ERROR_TYPES
from taskforce.observability._faults import report_fault
from taskforce.observability.metrics._aioprometheus import RegistryAdapter
from taskforce.observability.metrics._catalog import (
    AGENT_TYPES,
    BUILD_INFO,
    CALL_STATUSES,
    CATALOG,
    CONTEXT_PACK_MESSAGES,
    CONTEXT_PACK_TOKENS,
    FAULT_STAGES,
    LABEL_OVERFLOW,
    LLM_COST,
    LLM_DURATION,
    LLM_FAILURES,
    LLM_REQUESTS,
    LLM_RETRIES,
    LLM_TOKENS,
    LLM_TTFT,
    METRICS_ERRORS,
    MISSION_DURATION,
    MISSION_STATUSES,
    MISSION_STEPS,
    MISSION_TOOL_CALLS,
    MISSIONS,
    MISSIONS_IN_PROGRESS,
    OTHER,
    STATE_SIZE,
    TOKEN_TYPES,
    MetricSpec,
    guarded_pairs,
    series_budget,
)
from taskforce.observability.metrics._children import CounterChild, GaugeChild, HistogramChild
from taskforce.observability.metrics._family import CallbackFamily, Family
from taskforce.observability.metrics._guard import LabelGuard
from taskforce.observability.metrics._render import histogram_lines

__all__ = ["DEFAULT_SLICE_LINES", "MetricSet"]

#: Lines rendered between two yields to the event loop in :meth:`MetricSet.render_async`.
DEFAULT_SLICE_LINES = 500

_TEXT = attrgetter("text")
_VALUE = attrgetter("value")


@functools.cache  # one installed version per process; a lookup reads the package metadata
def _version() -> str:
    try:
        return version("pytaskforce")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+unknown"


#: The provider methods each flow calls: lean ``complete`` (``stream`` on the streaming
#: route), legacy ``generate`` for its plan and ``complete`` for its steps.
_FLOW_OPERATIONS = (
    ("lean", "complete"),
    ("lean", "stream"),
    ("legacy", "generate"),
    ("legacy", "complete"),
)


class MetricSet:
    """Every metric of the catalog, for one container.

    Attributes:
        registry: The aioprometheus ``Registry`` mirroring the families (served at
            ``/metrics`` through :meth:`render`, which produces the same text).
        guard: The :class:`LabelGuard` capping free-form label values.
        series_budget: Worst-case number of series this set can expose.
        max_label_values: The guard's cap per label per metric.
    """

    def __init__(
        self,
        *,
        max_label_values: int = 100,
        llm_provider: str = "unknown",
        llm_prices: Mapping[str, tuple[float, float]] | None = None,
        llm_model: str | None = None,
    ) -> None:
        """Build every family, and the series that exist from the first scrape on.

        Those are the fault counter per stage, the overflow counter per guarded
        label, the build-info gauge (= 1), the state-size histogram, the mission and
        context-pack series of the ``lean`` and ``legacy`` flows, and with ``llm_model``
        that model's LLM request and duration series for the operations each flow calls
        (time to first token for ``stream``), its token series, its cost series if it has
        a price, and its retry and failure series of every LLM error type.

        Args:
            max_label_values: Cap of distinct values per free-form label per metric.
            llm_provider: The ``llm_provider`` label of the build-info gauge.
            llm_prices: USD per million ``(input, output)`` tokens by model, for
                the LLM cost counter; a model without one has no cost.
            llm_model: The model the service asks for (``llm.model``): its request
                series exist at zero, so ``increase()`` counts each process's first
                request and failure of it (a series born above zero it cannot see).

        Raises:
            ValueError: ``max_label_values`` is below 1.
        """
        if max_label_values < 1:
            raise ValueError(f"max_label_values must be >= 1, got {max_label_values!r}")
        self.max_label_values = max_label_values
        self.llm_prices: dict[str, tuple[float, float]] = dict(llm_prices or {})
        #: Models already reported as having no price (``llm.price.missing`` once each).
        self.unpriced_models: set[str] = set()
        self.series_budget = series_budget(max_label_values)
        self.guard = LabelGuard(max_label_values, self._count_overflow)
        self._adapter = RegistryAdapter()
        self.registry = self._adapter.registry
        alias_limit = 16 * max_label_values + 1024
        self._families: dict[str, Family[Any]] = {}
        for spec in CATALOG:
            self._adapter.add_family(spec)
            self._families[spec.name] = Family(
                spec, self.guard, alias_limit=alias_limit, on_new=self._adapter.bind
            )
        self._callbacks: list[CallbackFamily] = []
        self._order: list[Family[Any] | CallbackFamily] = []
        self._sort()
        overflow = self.counter(LABEL_OVERFLOW)
        self._overflow = {pair: overflow.labels(*pair) for pair in guarded_pairs()}
        errors = self.counter(METRICS_ERRORS)
        self._faults = {stage: errors.labels(stage) for stage in FAULT_STAGES}
        build_info = self.gauge(BUILD_INFO)
        build_info.labels(_version(), platform.python_version(), llm_provider).set(1)
        self._precreate(llm_model)

    def _precreate(self, llm_model: str | None) -> None:
        self.histogram(STATE_SIZE).labels()
        for agent_type in AGENT_TYPES[:2]:  # lean, legacy: at zero from the first scrape
            self.gauge(MISSIONS_IN_PROGRESS).labels(agent_type)
            for status in MISSION_STATUSES:
                self.counter(MISSIONS).labels(agent_type, status)
                self.histogram(MISSION_DURATION).labels(agent_type, status)
                self.histogram(MISSION_STEPS).labels(agent_type)
                self.histogram(MISSION_TOOL_CALLS).labels(agent_type)
            self.histogram(CONTEXT_PACK_MESSAGES).labels(agent_type)
            self.histogram(CONTEXT_PACK_TOKENS).labels(agent_type)
        if llm_model is None:
            return
        for agent_type, operation in _FLOW_OPERATIONS:
            for status in CALL_STATUSES:
                self.counter(LLM_REQUESTS).labels(llm_model, agent_type, operation, status)
            self.histogram(LLM_DURATION).labels(llm_model, agent_type, operation)
            if operation == "stream":
                self.histogram(LLM_TTFT).labels(llm_model, agent_type)
        for agent_type in AGENT_TYPES[:2]:
            for error_type in LLM_ERROR_TYPES:
                self.counter(LLM_RETRIES).labels(llm_model, agent_type, error_type)
                self.counter(LLM_FAILURES).labels(llm_model, agent_type, error_type)
            for token_type in TOKEN_TYPES:
                self.counter(LLM_TOKENS).labels(llm_model, agent_type, token_type)
            if llm_model in self.llm_prices:
                self.counter(LLM_COST).labels(llm_model, agent_type)

    def family(self, spec: MetricSpec) -> Family[Any]:
        """Return the family built from ``spec``.

        Raises:
            KeyError: ``spec`` is not in the catalog.
        """
        return self._families[spec.name]

    def counter(self, spec: MetricSpec) -> Family[CounterChild]:
        """Return the counter family built from ``spec``.

        Raises:
            KeyError: ``spec`` is not in the catalog.
            TypeError: ``spec`` is not a counter.
        """
        return cast(Family[CounterChild], self._typed(spec, "counter"))

    def gauge(self, spec: MetricSpec) -> Family[GaugeChild]:
        """Return the gauge family built from ``spec``.

        Raises:
            KeyError: ``spec`` is not in the catalog.
            TypeError: ``spec`` is not a gauge.
        """
        return cast(Family[GaugeChild], self._typed(spec, "gauge"))

    def histogram(self, spec: MetricSpec) -> Family[HistogramChild]:
        """Return the histogram family built from ``spec``.

        Raises:
            KeyError: ``spec`` is not in the catalog.
            TypeError: ``spec`` is not a histogram.
        """
        return cast(Family[HistogramChild], self._typed(spec, "histogram"))

    def _typed(self, spec: MetricSpec, kind: Literal["counter", "gauge", "histogram"]) -> Any:
        if spec.kind != kind:
            raise TypeError(f"{spec.name} is a {spec.kind}, not a {kind}")
        return self._families[spec.name]

    def add_callback(self, family: CallbackFamily) -> None:
        """Add a family whose samples are read at scrape time (see :class:`CallbackFamily`).

        Args:
            family: Its spec (any name: process metrics keep their conventional ones) and
                the function that reads its samples.

        Raises:
            ValueError: A family of that name exists already.
        """
        if family.spec.name in self._families or any(
            cb.spec.name == family.spec.name for cb in self._callbacks
        ):
            raise ValueError(f"a metric named {family.spec.name!r} exists already")
        self._callbacks.append(family)
        self._sort()

    def _sort(self) -> None:
        # the order aioprometheus' formatter uses: by name
        blocks: list[Family[Any] | CallbackFamily] = [*self._families.values(), *self._callbacks]
        self._order = sorted(blocks, key=lambda block: block.spec.name)

    def record_fault(self, stage: str) -> None:
        """Count a fault swallowed inside instrumentation (never raises).

        Args:
            stage: One of the catalog's fault stages, optionally dotted (``llm.stream``
                counts as ``llm``); anything else counts as ``other``.
        """
        # the last line of defence: a fault while counting a fault must not raise
        with contextlib.suppress(Exception):
            child = self._faults.get(stage)
            if child is None:
                child = self._faults.get(str(stage).partition(".")[0], self._faults[OTHER])
            child.inc()

    def _count_overflow(self, metric: str, label: str) -> None:
        self._overflow[(metric, label)].inc()

    def record_overflow(self, metric: str, label: str) -> None:
        """Count a label value folded into ``other`` outside the guard (never raises).

        For a budget of its own that a proxy keeps on top of the guard's cap (the names
        no tool has): such a value is an overflow like any other, for the alert.

        Args:
            metric: The family's name.
            label: The guarded label.
        """
        with contextlib.suppress(Exception):
            self._count_overflow(metric, label)

    def render(self) -> bytes:
        """Return every family as a Prometheus text exposition (format 0.0.4), UTF-8.

        Returns:
            The exposition, families sorted by name, series in the order they were made.
        """
        lines: list[bytes] = []
        for chunk in self._slices(DEFAULT_SLICE_LINES):
            lines.extend(chunk)
        lines.append(b"")
        return b"\n".join(lines)

    async def render_async(self, *, slice_lines: int = DEFAULT_SLICE_LINES) -> bytes:
        """Like :meth:`render`, yielding to the event loop after every ``slice_lines`` lines.

        A scrape of a large set then delays other tasks by one slice at a time, not by
        the whole render. A series is always written whole (its buckets, count and sum
        agree); series made while the render is suspended may or may not be in it.

        Args:
            slice_lines: Lines written between two yields.

        Returns:
            The same bytes :meth:`render` returns for the same values.
        """
        pieces: list[bytes] = []
        for chunk in self._slices(slice_lines):
            # joined per slice: one join of the whole body would be a stall of its own
            chunk.append(b"")
            pieces.append(b"\n".join(chunk))
            await asyncio.sleep(0)
        return b"".join(pieces)

    def _slices(self, slice_lines: int) -> Iterator[list[bytes]]:
        lines: list[bytes] = []
        for block in self._order:
            if isinstance(block, CallbackFamily):
                try:
                    samples = block.lines()
                except Exception as exc:  # a broken reader loses its family, not the scrape
                    report_fault(self, block.spec.name, "render", exc)
                    continue
                lines.extend(block.header)
                lines.extend(samples)
                continue
            # where this family's lines not yet handed out begin: what a fault takes back
            mark = len(lines)
            try:
                lines.extend(block.header)
                children = block.children
                if block.spec.kind == "histogram":
                    for child in children:
                        histogram_lines(lines, child.texts, child.counts, child.sum)
                        if len(lines) >= slice_lines:
                            yield lines
                            lines, mark = [], 0
                    continue
                step = max(1, slice_lines)
                for start in range(0, len(children), step):
                    part = children[start : start + step]
                    values = map(str.encode, map(str, map(_VALUE, part)))
                    lines.extend(map(bytes.__add__, map(_TEXT, part), values))
                    if len(lines) >= slice_lines:
                        yield lines
                        lines, mark = [], 0
            except Exception as exc:
                # a family that cannot be written loses its lines, not the scrape
                del lines[mark:]
                report_fault(self, block.spec.name, "render", exc)
        # collectors an embedder registered on the registry: served too (CONTRACT.md)
        lines.extend(self._adapter.foreign_lines(self._foreign_fault))
        yield lines

    def _foreign_fault(self, name: str, exc: Exception) -> None:
        report_fault(self, name, "render", exc)
