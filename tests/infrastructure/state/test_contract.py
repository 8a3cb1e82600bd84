"""The StateStoreProtocol contract, run against both stores: the file store and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from taskforce.core.interfaces.state import AppendResult, SessionExpiry, StateStoreProtocol
from taskforce.errors import StateCorruptedError, StateStoreError
from taskforce.infrastructure.state import FileStateStore, StateLimits

MakeStore = Callable[..., StateStoreProtocol]


@pytest.fixture(
    name="make_store",
    params=["file", pytest.param("postgres", marks=pytest.mark.integration)],
)
async def fixture_make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[MakeStore]:
    """Builds stores of the parametrised kind, all over the same storage; closes them after."""
    made: list[Any] = []
    if request.param == "file":

        def make(limits: StateLimits | None = None) -> StateStoreProtocol:
            store = FileStateStore(tmp_path / "state", limits=limits)
            made.append(store)
            return store

    else:
        from taskforce.infrastructure.state._postgres_store import PostgresStateStore

        dsn = request.getfixturevalue("postgres_dsn")

        def make(limits: StateLimits | None = None) -> StateStoreProtocol:
            store = PostgresStateStore(dsn, pool_size=4, limits=limits)
            made.append(store)
            return store

    yield make
    for store in made:
        await store.aclose()


#: Makes sessions look last written this many seconds ago.
Age = Callable[..., Awaitable[None]]


@pytest.fixture(name="age")
def fixture_age(request: pytest.FixtureRequest, make_store: MakeStore, tmp_path: Path) -> Age:
    """Sets when sessions were last written, as each store tells it: the file's
    modification time, the row's ``updated_at``."""
    if request.node.callspec.params["make_store"] == "file":

        async def age(*session_ids: str, seconds: float) -> None:
            then = time.time() - seconds
            for session_id in session_ids:
                os.utime(tmp_path / "state" / f"{session_id}.json", (then, then))

        return age

    dsn = request.getfixturevalue("postgres_dsn")

    async def age_rows(*session_ids: str, seconds: float) -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE taskforce_sessions SET updated_at = now() - make_interval(secs => $2) "
                "WHERE session_id = ANY($1)",
                list(session_ids),
                seconds,
            )
        finally:
            await conn.close()

    return age_rows


@pytest.fixture(name="store")
def fixture_store(make_store: MakeStore) -> StateStoreProtocol:
    """A store without limits."""
    return make_store()


def _record(i: int, size: int = 0) -> dict[str, Any]:
    return {"mission_id": f"m{i}", "status": "completed", "blob": "x" * size}


class TestSaveLoad:
    def test_satisfies_protocol(self, store: StateStoreProtocol) -> None:
        """The store is a StateStoreProtocol at runtime."""
        assert isinstance(store, StateStoreProtocol)

    async def test_round_trip(self, store: StateStoreProtocol) -> None:
        """A saved state loads back equal: non-ASCII, nesting, other keys beside missions."""
        state = {
            "missions": [{"m": "grüß ✓", "n": [1, 2.5, None, True]}],
            "zeta": {"a": "b"},
            "alpha": 1,
        }
        await store.save("s1", state)
        assert state == await store.load("s1")

    async def test_round_trip_without_missions(self, store: StateStoreProtocol) -> None:
        """A state without a missions list loads back as saved, with no missions key added."""
        for state in ({"a": 1}, {}, {"missions": "not a list"}):
            await store.save("s", state)
            assert state == await store.load("s")

    async def test_awkward_text_round_trips(self, store: StateStoreProtocol) -> None:
        """NUL characters, lone surrogates and newlines in values survive save and append."""
        text = "nul\x00 surrogate\udcff newline\n end"
        await store.save("s", {"missions": [{"t": text}]})
        await store.append("s", {"t": text})
        assert {"missions": [{"t": text}, {"t": text}]} == await store.load("s")

    async def test_unknown_session_is_none(self, store: StateStoreProtocol) -> None:
        """An unknown session loads as None."""
        assert None is await store.load("never")

    async def test_save_replaces(self, store: StateStoreProtocol) -> None:
        """A second save replaces the whole state, records included."""
        await store.save("s", {"missions": [{"a": 1}, {"a": 2}], "old": 1})
        await store.save("s", {"missions": [{"b": 1}]})
        assert {"missions": [{"b": 1}]} == await store.load("s")

    async def test_sessions_are_independent(self, store: StateStoreProtocol) -> None:
        """Each session has its own state."""
        await store.append("a", {"v": "a"})
        await store.save("b", {"v": "b"})
        assert {"missions": [{"v": "a"}]} == await store.load("a")
        assert {"v": "b"} == await store.load("b")

    @pytest.mark.parametrize("bad", [{"o": object()}, {"n": float("nan")}])
    async def test_unserialisable_is_type_error(
        self, store: StateStoreProtocol, bad: dict[str, Any]
    ) -> None:
        """A state or record that is not JSON raises TypeError and changes nothing."""
        await store.save("s", {"missions": [{"ok": True}]})
        with pytest.raises(TypeError):
            await store.save("s", bad)
        with pytest.raises(TypeError):
            await store.append("s", bad)
        assert {"missions": [{"ok": True}]} == await store.load("s")

    async def test_ids_at_the_limits_are_kept_apart(self, store: StateStoreProtocol) -> None:
        """Ids of 128 characters and of the odd allowed ones (dots, dashes, underscores, a
        name like a state or temp file's) each keep their own records, whatever the store."""
        ids = ["a" * 128, "-" * 128, "_" + "." * 127, "a..b", "a.", "-", "_", "x.json", "x.tmp"]
        for n, session_id in enumerate(ids):
            await store.append(session_id, _record(n))
            await store.append(session_id, _record(n + 100))
        for n, session_id in enumerate(ids):
            state = await store.load(session_id) or {}
            assert [f"m{n}", f"m{n + 100}"] == [r["mission_id"] for r in state["missions"]]

    @pytest.mark.parametrize("session_id", ["", ".", "..", "../x", "a/b", "a b", "0" * 129, "ü"])
    async def test_invalid_ids(self, store: StateStoreProtocol, session_id: str) -> None:
        """Ids a store cannot keep raise ValueError on save, append and load."""
        with pytest.raises(ValueError, match="invalid session id"):
            await store.save(session_id, {})
        with pytest.raises(ValueError, match="invalid session id"):
            await store.append(session_id, {})
        with pytest.raises(ValueError, match="invalid session id"):
            await store.load(session_id)


class TestAppend:
    async def test_append_creates_and_extends(self, store: StateStoreProtocol) -> None:
        """The first append creates the session; later ones add at the end, in order."""
        first = await store.append("s", _record(1))
        second = await store.append("s", _record(2))
        assert (1, 2, 0, 0) == (first.records, second.records, first.dropped, second.dropped)
        assert second.size_bytes > first.size_bytes > 0
        assert [_record(1), _record(2)] == (await store.load("s") or {})["missions"]

    async def test_append_keeps_other_keys(self, store: StateStoreProtocol) -> None:
        """Appending to a saved state keeps its other keys and its records."""
        await store.save("s", {"note": "keep", "missions": [_record(0)]})
        await store.append("s", _record(1))
        assert {"note": "keep", "missions": [_record(0), _record(1)]} == await store.load("s")

    async def test_append_replaces_non_list_missions(self, store: StateStoreProtocol) -> None:
        """A state whose missions is not a list gets a list with the appended record."""
        await store.save("s", {"missions": "odd", "k": 1})
        await store.append("s", _record(1))
        assert {"missions": [_record(1)], "k": 1} == await store.load("s")

    async def test_concurrent_appends_lose_nothing(self, make_store: MakeStore) -> None:
        """200 appends to 5 sessions from two store objects at once: each record once, in place."""
        stores = [make_store(), make_store()]

        async def one(i: int) -> AppendResult:
            return await stores[i % 2].append(f"s{i % 5}", _record(i))

        await asyncio.gather(*(one(i) for i in range(200)))
        for session in range(5):
            state = await stores[0].load(f"s{session}") or {}
            ids = sorted(r["mission_id"] for r in state["missions"])
            assert sorted(f"m{i}" for i in range(session, 200, 5)) == ids

    async def test_records_are_in_append_order_not_finished_at_order(
        self, make_store: MakeStore
    ) -> None:
        """A session lists its records in the order they were appended, whatever their
        finished_at says, and every reader, from any store object, sees one order."""
        stores = [make_store(), make_store()]
        await stores[0].append("s", {**_record(1), "finished_at": "2026-01-01T00:00:02+00:00"})
        await stores[1].append("s", {**_record(2), "finished_at": "2026-01-01T00:00:01+00:00"})
        await asyncio.gather(*(stores[i % 2].append("s", _record(i)) for i in range(3, 40)))
        orders = [
            [r["mission_id"] for r in (await store.load("s") or {})["missions"]]
            for store in (*stores, *stores)
        ]
        assert ["m1", "m2"] == orders[0][:2]
        assert all(order == orders[0] for order in orders)
        assert sorted(f"m{i}" for i in range(1, 40)) == sorted(orders[0])


class TestLimits:
    async def test_max_history_drops_oldest(self, make_store: MakeStore) -> None:
        """With max_history=3 the three newest records stay; each append reports its drop."""
        store = make_store(StateLimits(max_history=3))
        results = [await store.append("s", _record(i)) for i in range(5)]
        assert [0, 0, 0, 1, 1] == [r.dropped for r in results]
        assert [3, 3] == [r.records for r in results[3:]]
        state = await store.load("s") or {}
        assert ["m2", "m3", "m4"] == [r["mission_id"] for r in state["missions"]]

    async def test_max_bytes_drops_oldest(self, make_store: MakeStore) -> None:
        """With max_bytes the session stays under the limit; the oldest records go first."""
        store = make_store(StateLimits(max_bytes=10_000))
        for i in range(20):
            result = await store.append("s", _record(i, 3_000))
            assert result.size_bytes <= 10_000
        state = await store.load("s") or {}
        ids = [r["mission_id"] for r in state["missions"]]
        assert ["m17", "m18", "m19"] == ids

    async def test_limits_hold_under_concurrent_appends(self, make_store: MakeStore) -> None:
        """60 appends to one session from two store objects at once (two replicas): every
        append leaves at most max_history records, each record is dropped exactly once, and
        the session keeps the last three that were written."""
        limits = StateLimits(max_history=3)
        stores = [make_store(limits), make_store(limits)]
        results = await asyncio.gather(*(stores[i % 2].append("s", _record(i)) for i in range(60)))
        assert all(1 <= r.records <= 3 for r in results)
        assert 57 == sum(r.dropped for r in results)
        kept = [r["mission_id"] for r in (await stores[1].load("s") or {})["missions"]]
        assert 3 == len(set(kept))
        # the next append drops the oldest of those three, and keeps the other two in order
        after = await stores[0].append("s", _record(60))
        assert (3, 1) == (after.records, after.dropped)
        state = await stores[1].load("s") or {}
        assert [*kept[1:], "m60"] == [r["mission_id"] for r in state["missions"]]

    @pytest.mark.parametrize(("slack", "dropped"), [(-1, 1), (0, 0), (1, 0)])
    async def test_max_bytes_holds_at_its_boundary(
        self, make_store: MakeStore, slack: int, dropped: int
    ) -> None:
        """A session exactly max_bytes large keeps every record; one byte less drops the oldest."""
        unlimited = make_store()
        await unlimited.append("measured", _record(1, 100))
        size = (await unlimited.append("measured", _record(2, 100))).size_bytes
        store = make_store(StateLimits(max_bytes=size + slack))
        await store.append("s", _record(1, 100))
        result = await store.append("s", _record(2, 100))
        assert (dropped, 2 - dropped) == (result.dropped, result.records)
        assert result.size_bytes <= size + slack or result.records == 1

    async def test_newest_record_is_kept_even_when_too_big(self, make_store: MakeStore) -> None:
        """A record larger than max_bytes replaces the older ones but is itself kept."""
        store = make_store(StateLimits(max_bytes=1_024))
        await store.append("s", _record(1))
        result = await store.append("s", _record(2, 5_000))
        assert (1, 1) == (result.records, result.dropped)
        assert [_record(2, 5_000)] == (await store.load("s") or {})["missions"]


class TestErrors:
    async def test_errors_name_no_server_path(self, store: StateStoreProtocol) -> None:
        """A failing store raises StateStoreError whose message names no path or DSN."""
        if isinstance(store, FileStateStore):
            store.state_dir.parent.mkdir(parents=True, exist_ok=True)
            store.state_dir.write_text("a file where the directory should be")
            secret = str(store.state_dir)
        else:
            from taskforce.infrastructure.state._postgres_store import PostgresStateStore

            assert isinstance(store, PostgresStateStore)
            secret = store._dsn.replace("/postgres?", "/no_such_db?")
            store = PostgresStateStore(secret)
        with pytest.raises(StateStoreError) as info:
            await store.append("s", _record(1))
        assert secret not in str(info.value)
        assert "/" not in str(info.value)

    async def test_a_corrupt_session_fails_reads_and_only_the_file_stores_appends(
        self, store: StateStoreProtocol
    ) -> None:
        """A session whose stored state was edited into text that is no JSON is left as it
        is and fails every read on both stores; the file store, which rewrites the file
        whole, fails an append too, while PostgreSQL appends without reading the session
        (the operator guide's "A corrupt session")."""
        await store.append("hurt", _record(1))
        if isinstance(store, FileStateStore):
            (store.state_dir / "hurt.json").write_text("{bad")
        else:
            import asyncpg

            conn = await asyncpg.connect(getattr(store, "_dsn"))  # noqa: B009 (private)
            try:
                await conn.execute("UPDATE taskforce_sessions SET state = '{bad'")
            finally:
                await conn.close()
        if isinstance(store, FileStateStore):
            with pytest.raises(StateCorruptedError):
                await store.append("hurt", _record(2))
            assert "{bad" == (store.state_dir / "hurt.json").read_text()
        else:
            assert 2 == (await store.append("hurt", _record(2))).records
        with pytest.raises(StateCorruptedError):
            await store.load("hurt")


_HOUR = StateLimits(session_ttl_seconds=3600)


async def _expire(store: StateStoreProtocol) -> SessionExpiry:
    expire_sessions = getattr(store, "expire_sessions")  # noqa: B009 (not on the protocol)
    result: SessionExpiry = await expire_sessions()
    return result


class TestExpiry:
    async def test_a_session_past_its_ttl_reads_as_none_before_any_sweep(
        self, make_store: MakeStore, age: Age
    ) -> None:
        """A session not written for longer than the TTL is not found, swept or not; one
        written within it is read whole."""
        store = make_store(_HOUR)
        await store.append("old", _record(1))
        await store.append("recent", _record(2))
        await age("old", seconds=3700)
        await age("recent", seconds=3500)
        assert None is await store.load("old")
        assert {"missions": [_record(2)]} == await store.load("recent")

    async def test_an_append_to_an_expired_session_starts_it_afresh(
        self, make_store: MakeStore, age: Age
    ) -> None:
        """The record is the first of a new session: the old state and records are gone."""
        store = make_store(_HOUR)
        await store.save("s", {"note": "old", "missions": [_record(0), _record(1)]})
        await age("s", seconds=7200)
        result = await store.append("s", _record(2))
        assert 1 == result.records
        assert {"missions": [_record(2)]} == await store.load("s")
        await store.append("s", _record(3))
        assert {"missions": [_record(2), _record(3)]} == await store.load("s")

    async def test_the_sweep_deletes_expired_sessions_only(
        self, make_store: MakeStore, age: Age
    ) -> None:
        """The sweep deletes the expired sessions and counts them; the others keep all
        their records; a second sweep finds nothing."""
        store = make_store(_HOUR)
        for session in ("a", "b", "kept"):
            await store.append(session, _record(1))
            await store.append(session, _record(2))
        await age("a", "b", seconds=7200)
        assert SessionExpiry(2) == await _expire(store)
        assert SessionExpiry(0) == await _expire(store)
        assert {"missions": [_record(1), _record(2)]} == await store.load("kept")
        unlimited = make_store()  # reads what is stored, expired or not
        assert [None, None] == [await unlimited.load("a"), await unlimited.load("b")]

    async def test_without_a_ttl_nothing_expires(self, make_store: MakeStore, age: Age) -> None:
        """The default keeps every session: old ones load, and a sweep deletes nothing."""
        store = make_store()
        await store.append("s", _record(1))
        await age("s", seconds=10 * 365 * 86400)
        assert SessionExpiry(0) == await _expire(store)
        assert {"missions": [_record(1)]} == await store.load("s")

    async def test_sweeps_running_at_once_count_each_session_once(
        self, make_store: MakeStore, age: Age
    ) -> None:
        """Two processes' sweeps at once (two stores over the same storage) raise nothing
        and between them, with one more sweep after, delete each session exactly once."""
        first, second = make_store(_HOUR), make_store(_HOUR)
        sessions = [f"s{i}" for i in range(30)]
        await asyncio.gather(*(first.append(s, _record(1)) for s in sessions))
        await age(*sessions, seconds=7200)
        done = [*await asyncio.gather(_expire(first), _expire(second)), await _expire(first)]
        assert 30 == sum(d.expired for d in done)
        assert (0, None) == (sum(d.failed for d in done), done[0].error)
        unlimited = make_store()
        assert [None] * 30 == [await unlimited.load(s) for s in sessions]

    async def test_appends_meeting_a_sweep_leave_no_session_half_deleted(
        self, make_store: MakeStore, age: Age
    ) -> None:
        """Appends to expired sessions while two sweeps run: each such session ends with
        its new record alone (never an old one beside it, never without it); the others
        are deleted, each counted once."""
        stores = [make_store(_HOUR), make_store(_HOUR)]
        sessions = [f"s{i}" for i in range(20)]
        old = {"missions": [_record(0), _record(1)]}
        await asyncio.gather(*(stores[0].save(session, old) for session in sessions))
        await age(*sessions, seconds=7200)
        appends = [stores[i % 2].append(f"s{i}", _record(100 + i)) for i in range(10)]
        done = await asyncio.gather(_expire(stores[0]), _expire(stores[1]), *appends)
        last = await _expire(stores[0])
        expired = sum(d.expired for d in done[:2] if isinstance(d, SessionExpiry)) + last.expired
        for i in range(10):
            assert {"missions": [_record(100 + i)]} == await stores[1].load(f"s{i}")
        unlimited = make_store()
        assert [None] * 10 == [await unlimited.load(f"s{i}") for i in range(10, 20)]
        # the untouched ten, and any appended one a sweep took before its append
        assert 10 <= expired <= 20
