"""StateStoreCheck: the state store's field of /health, one check in flight, each answer
bounded; and /health with a store of one's own."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from taskforce.api._health import StateStoreCheck
from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.interfaces.state import StateStoreHealth
from tests.observability.proxy_fakes import FakeStore

# Long enough never to pass in a test that expects the check to answer first.
_PATIENT = 60.0


class CheckedStore(FakeStore):
    """An in-memory store whose ``check_health`` sets ``started``, then waits for ``released``."""

    backend = "fake"

    def __init__(self, health: StateStoreHealth | None = None) -> None:
        super().__init__()
        self.health = health if health is not None else StateStoreHealth(is_reachable=True)
        self.released = asyncio.Event()
        self.released.set()
        self.started = asyncio.Event()
        self.calls = 0
        self.cancelled = 0

    async def check_health(self) -> StateStoreHealth:
        self.calls += 1
        self.started.set()
        try:
            await self.released.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self.health


class SyncCheckStore(FakeStore):
    """A store of one's own with a ``backend`` name and a check of another interface (sync)."""

    backend = "mine"

    def check_health(self) -> bool:
        return True


class TestReport:
    async def test_a_store_without_a_check_is_not_reported(self) -> None:
        """A store of one's own without check_health and backend: no state_store field."""
        assert None is await StateStoreCheck(FakeStore(), _PATIENT).report()

    async def test_a_store_without_a_backend_name_is_not_reported(self) -> None:
        """check_health alone is not enough: the field names the backend."""

        class Unnamed(FakeStore):
            async def check_health(self) -> StateStoreHealth:
                return StateStoreHealth(is_reachable=True)

        assert None is await StateStoreCheck(Unnamed(), _PATIENT).report()

    async def test_reachable(self) -> None:
        """A reachable store: its backend and reachable true, no error."""
        report = await StateStoreCheck(CheckedStore(), _PATIENT).report()
        assert {"backend": "fake", "reachable": True} == report

    async def test_unreachable_with_the_stores_reason(self) -> None:
        """An unreachable store: reachable false and the reason the store gave."""
        store = CheckedStore(StateStoreHealth(is_reachable=False, error="ConnectionRefusedError"))
        report = await StateStoreCheck(store, _PATIENT).report()
        assert {"backend": "fake", "reachable": False, "error": "ConnectionRefusedError"} == report

    async def test_a_check_that_raises_reads_unreachable(self) -> None:
        """A check that breaks its contract and raises: unreachable with the error's class."""

        class Broken(CheckedStore):
            async def check_health(self) -> StateStoreHealth:
                raise RuntimeError("secret detail")

        report = await StateStoreCheck(Broken(), _PATIENT).report()
        assert {"backend": "fake", "reachable": False, "error": "RuntimeError"} == report

    async def test_a_check_that_is_not_the_protocols_reads_unreachable(self) -> None:
        """A store of one's own with a backend name and a synchronous check_health (one of
        another interface): its check fails as a TypeError, and /health still answers."""
        report = await StateStoreCheck(SyncCheckStore(), _PATIENT).report()
        assert {"backend": "mine", "reachable": False, "error": "TypeError"} == report

    async def test_a_check_answering_something_else_reads_unreachable(self) -> None:
        """An async check_health that answers a bool (not a StateStoreHealth): a TypeError,
        so "reachable" never rests on a value the protocol does not define."""

        class BoolCheck(FakeStore):
            backend = "mine"

            async def check_health(self) -> bool:
                return True

        report = await StateStoreCheck(BoolCheck(), _PATIENT).report()
        assert {"backend": "mine", "reachable": False, "error": "TypeError"} == report

    async def test_a_check_past_the_deadline_is_answered_as_a_timeout(self) -> None:
        """A check that hangs: the answer comes at the deadline, unreachable, TimeoutError."""
        store = CheckedStore()
        store.released.clear()
        check = StateStoreCheck(store, 0.01)
        report = await check.report()
        expected = {
            "backend": "fake",
            "reachable": False,
            "error": "TimeoutError: no answer within 0.01 s (state.health_timeout_seconds)",
        }
        assert expected == report
        await check.aclose()

    def test_a_deadline_not_above_zero_is_refused(self) -> None:
        """deadline_seconds must be above 0: refused where the check is made."""
        with pytest.raises(ValueError, match="deadline_seconds"):
            StateStoreCheck(CheckedStore(), 0)


class TestOneCheckInFlight:
    async def test_concurrent_requests_share_one_check(self) -> None:
        """Ten reports at once ask the store once, and all get its answer."""
        store = CheckedStore()
        store.released.clear()
        check = StateStoreCheck(store, _PATIENT)
        reports = [asyncio.create_task(check.report()) for _ in range(10)]
        await store.started.wait()
        await asyncio.sleep(0)
        store.released.set()
        answers = await asyncio.gather(*reports)
        assert 1 == store.calls
        assert 10 * [{"backend": "fake", "reachable": True}] == answers

    async def test_a_check_that_outlives_its_deadline_is_joined_not_repeated(self) -> None:
        """Requests after a timed-out answer join the check still running; once it ends, the
        next request starts a new one."""
        store = CheckedStore()
        store.released.clear()
        check = StateStoreCheck(store, 0.01)
        answers = [await check.report() for _ in range(3)]
        assert [False] * 3 == [answer and answer["reachable"] for answer in answers]
        assert 1 == store.calls
        store.released.set()
        assert check._in_flight is not None
        await asyncio.wait({check._in_flight})
        assert {"backend": "fake", "reachable": True} == await check.report()
        assert 2 == store.calls

    async def test_a_request_that_gives_up_leaves_the_check_running(self) -> None:
        """A cancelled request (a client gone) does not cancel the check the others wait for."""
        store = CheckedStore()
        store.released.clear()
        check = StateStoreCheck(store, _PATIENT)
        first = asyncio.create_task(check.report())
        await store.started.wait()
        second = asyncio.create_task(check.report())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        store.released.set()
        assert {"backend": "fake", "reachable": True} == await second
        assert (1, 0) == (store.calls, store.cancelled)

    async def test_aclose_cancels_the_check_in_flight(self) -> None:
        """Stopping the app cancels a check no request waits for any more."""
        store = CheckedStore()
        store.released.clear()
        check = StateStoreCheck(store, 0.01)
        await check.report()
        await check.aclose()
        assert 1 == store.cancelled

    async def test_a_request_waiting_when_the_app_stops_is_answered(self) -> None:
        """A request still waiting when aclose cancels the check gets an answer, not a
        cancellation of its own."""
        store = CheckedStore()
        store.released.clear()
        check = StateStoreCheck(store, _PATIENT)
        waiting = asyncio.create_task(check.report())
        await store.started.wait()
        await check.aclose()
        expected = {"backend": "fake", "reachable": False, "error": "CancelledError"}
        assert expected == await waiting


class TestHealthRoute:
    @pytest.mark.parametrize(
        ("store", "expected"),
        [
            (FakeStore(), None),
            (SyncCheckStore(), {"backend": "mine", "reachable": False, "error": "TypeError"}),
        ],
        ids=["without-a-check", "sync-check"],
    )
    async def test_a_store_of_ones_own_keeps_health_answering(
        self, settings: Settings, store: FakeStore, expected: dict[str, object] | None
    ) -> None:
        """With a store of one's own the app builds and /health is a 200 with status ok: no
        state_store field without a check (pins existing behaviour), unreachable with a
        TypeError for a check that is not the protocol's (it was a 500)."""
        app = create_app(container=build_container(settings, state_store=store))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/health")
            head = await client.head("/health")
        assert (200, "ok") == (response.status_code, response.json()["status"])
        assert expected == response.json().get("state_store")
        assert 200 == head.status_code
