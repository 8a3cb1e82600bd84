"""StateStoreProxy: the size of saved state after a successful save; every failed call counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from taskforce.core.interfaces import AppendResult, StateStoreProtocol
from taskforce.errors import StateStoreError
from taskforce.infrastructure.state import FileStateStore
from taskforce.observability import StateStoreProxy
from taskforce.observability.metrics import MetricSet
from tests.observability.metric_samples import faults, samples
from tests.observability.proxy_fakes import FakeStore


def _errors(metrics: MetricSet) -> dict[tuple[str, ...], Any]:
    """taskforce_state_errors_total by operation, series at zero left out."""
    return samples(metrics, "taskforce_state_errors_total")


def _sizes(metrics: MetricSet) -> list[tuple[int, float]]:
    """The state-size histogram as (count, sum), empty when nothing was observed."""
    return list(samples(metrics, "taskforce_state_size_bytes").values())


class TestStateStoreProxy:
    def test_parity(self, metrics: MetricSet) -> None:
        """isinstance and __wrapped__ are the store's."""
        store = FakeStore()
        proxy = StateStoreProxy(store, metrics)
        assert isinstance(proxy, FakeStore)
        assert isinstance(proxy, StateStoreProtocol)
        assert store is proxy.__wrapped__

    async def test_records_utf8_json_size(self, metrics: MetricSet) -> None:
        """The size is the byte length of the UTF-8 JSON text, non-ASCII counted in bytes."""
        state = {"b": "äöü", "a": [1, 2, {"x": None}]}
        proxy = StateStoreProxy(FakeStore(), metrics)
        assert await proxy.save("s", state) is None
        expected = len(json.dumps(state, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        assert [(1, expected)] == _sizes(metrics)

    async def test_size_reported_by_the_store_is_used(self, metrics: MetricSet) -> None:
        """A store that returns the bytes it wrote: that number is recorded and returned."""

        class SizedStore(FakeStore):
            async def save(self, session_id: str, state: dict[str, object]) -> int:
                await super().save(session_id, state)
                return 12345

        proxy = StateStoreProxy(SizedStore(), metrics)
        assert 12345 == await proxy.save("s", {"a": 1})
        assert [(1, 12345)] == _sizes(metrics)

    async def test_real_store_size_is_file_size(self, metrics: MetricSet, tmp_path: Path) -> None:
        """With the file store, the recorded size is the size of the file on disk."""
        proxy = StateStoreProxy(FileStateStore(tmp_path), metrics)
        state = {"missions": [{"text": "ünïcode " * 10}]}
        written = await proxy.save("s1", state)
        assert (tmp_path / "s1.json").stat().st_size == written
        assert [(1, written)] == _sizes(metrics)

    async def test_load_passes_through(self, metrics: MetricSet) -> None:
        """load returns the store's object and records no size."""
        store = FakeStore()
        proxy = StateStoreProxy(store, metrics)
        state = {"k": 1}
        await proxy.save("s", state)
        assert state is await proxy.load("s")
        assert await proxy.load("other") is None
        assert 1 == _sizes(metrics)[0][0]

    async def test_failed_save_records_nothing(self, metrics: MetricSet) -> None:
        """A save that raises: the same exception object, no size recorded."""
        store = FakeStore()
        store.error = StateStoreError("disk full")
        with pytest.raises(StateStoreError) as caught:
            await StateStoreProxy(store, metrics).save("s", {"k": 1})
        assert store.error is caught.value
        assert [] == _sizes(metrics)
        assert {("save",): 1} == _errors(metrics)

    async def test_failed_load_is_counted(self, metrics: MetricSet) -> None:
        """A load that raises: the same exception object, one load error counted."""
        store = FakeStore()
        store.error = StateStoreError("database down")
        with pytest.raises(StateStoreError) as caught:
            await StateStoreProxy(store, metrics).load("s")
        assert store.error is caught.value
        assert {("load",): 1} == _errors(metrics)

    async def test_error_series_exist_at_zero(self, metrics: MetricSet) -> None:
        """Every operation's error series is exposed at 0 before any error (for rate())."""
        StateStoreProxy(FakeStore(), metrics)
        text = metrics.render().decode()
        for operation in ("load", "save", "append"):
            assert f'taskforce_state_errors_total{{operation="{operation}"}} 0' in text

    async def test_unserialisable_state_is_a_fault(self, metrics: MetricSet) -> None:
        """State the store accepted but json cannot serialise: saved, a fault is counted."""
        store = FakeStore()
        state = {"when": object()}
        await StateStoreProxy(store, metrics).save("s", state)
        assert state is store.saved["s"]
        assert {"state": 1} == faults(metrics)
        assert [] == _sizes(metrics)


class TestStateStoreProxyAppend:
    async def test_append_records_the_session_size(self, metrics: MetricSet) -> None:
        """append returns the store's result unchanged and records its size_bytes."""
        proxy = StateStoreProxy(FakeStore(), metrics)
        first = await proxy.append("s", {"m": 1})
        second = await proxy.append("s", {"m": 2})
        assert (100, 200) == (first.size_bytes, second.size_bytes)
        assert [(2, 300)] == _sizes(metrics)

    @pytest.mark.parametrize(
        "size",
        [float("inf"), float("nan"), -1, 1.5, 10**400, True, "12", None],
        ids=["inf", "nan", "negative", "fraction", "past-float", "bool", "text", "none"],
    )
    async def test_a_size_that_is_not_a_count_is_a_fault(
        self, metrics: MetricSet, size: object
    ) -> None:
        """A store of one's own reports an odd size: its result comes back, nothing observed."""

        class OddSizeStore(FakeStore):
            async def append(self, session_id: str, record: dict[str, Any]) -> AppendResult:
                await super().append(session_id, record)
                return AppendResult(size_bytes=size, records=1)  # type: ignore[arg-type]

        appended = await StateStoreProxy(OddSizeStore(), metrics).append("s", {})
        assert size is appended.size_bytes
        assert [] == _sizes(metrics)
        assert {"state": 1} == faults(metrics)
        assert b"_sum 0.0\n" in metrics.render()

    async def test_append_error_passes_through_unrecorded(self, metrics: MetricSet) -> None:
        """A failing append raises the same exception object and records nothing."""
        store = FakeStore()
        store.error = StateStoreError("down")
        proxy = StateStoreProxy(store, metrics)
        with pytest.raises(StateStoreError) as info:
            await proxy.append("s", {})
        assert store.error is info.value
        assert [] == _sizes(metrics)
        assert {("append",): 1} == _errors(metrics)


class TestStateStoreProxyHealth:
    async def test_check_health_passes_through_uncounted(
        self, metrics: MetricSet, tmp_path: Path
    ) -> None:
        """check_health and backend are the store's own, and a failed check is no state error."""
        (tmp_path / "state").write_text("a file where the directory should be")
        store = FileStateStore(tmp_path / "state")
        proxy = StateStoreProxy(store, metrics)
        assert store.check_health == proxy.check_health
        assert "file" == proxy.backend
        health = await proxy.check_health()
        assert health == await store.check_health()
        assert False is health.is_reachable
        assert {} == _errors(metrics)
        assert [] == _sizes(metrics)
        assert {} == faults(metrics)
        await store.aclose()

    def test_a_store_without_a_check_gets_none(self, metrics: MetricSet) -> None:
        """The proxy adds no check_health to a store that has none (callers test hasattr)."""
        assert not hasattr(StateStoreProxy(FakeStore(), metrics), "check_health")
