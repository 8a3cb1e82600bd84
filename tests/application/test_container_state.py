"""The container builds the state store the settings name, with its limits, and opens it."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.infrastructure.state import FileStateStore, PostgresStateStore, StateLimits


def _settings(tmp_path: Path, **state: object) -> Settings:
    return Settings(state_dir=tmp_path / "state", workspace_dir=tmp_path / "ws", state=state)


class TestStateStoreChoice:
    @pytest.mark.parametrize("metrics", [True, False])
    def test_file_store_by_default(self, tmp_path: Path, metrics: bool) -> None:
        """The default is the file store on state_dir with the limits of the settings."""
        settings = _settings(tmp_path, max_history=9).model_copy(
            update={"metrics": Settings().metrics.model_copy(update={"enabled": metrics})}
        )
        store = build_container(settings).state_store
        plain = getattr(store, "__wrapped__", store)
        assert isinstance(store, FileStateStore) and isinstance(plain, FileStateStore)
        assert (tmp_path / "state", StateLimits(9, 4 * 1024 * 1024)) == (
            plain.state_dir,
            plain.limits,
        )
        assert (store is not plain) == metrics

    def test_postgres_store_is_wrapped_by_the_same_proxy(self, tmp_path: Path) -> None:
        """backend=postgres builds the PostgreSQL store behind the StateStoreProxy."""
        from taskforce.observability import StateStoreProxy

        settings = _settings(
            tmp_path, backend="postgres", dsn="postgresql://u:p@127.0.0.1:1/db", pool_size=2
        )
        store = build_container(settings).state_store
        assert isinstance(store, StateStoreProxy)
        assert isinstance(store.__wrapped__, PostgresStateStore)
        assert 2 == store.__wrapped__.pool_size

    @pytest.mark.parametrize(("given", "kept"), [({}, 30.0), ({"pool_idle_seconds": 5}, 5.0)])
    def test_postgres_store_closes_idle_connections_before_a_network_forgets_them(
        self, tmp_path: Path, given: dict[str, float], kept: float
    ) -> None:
        """state.pool_idle_seconds reaches the store; its default is below the shortest
        idle timeout of a common load balancer or NAT (60 s)."""
        dsn = "postgresql://u:p@127.0.0.1:1/db"
        settings = _settings(tmp_path, backend="postgres", dsn=dsn, **given)
        store = getattr(build_container(settings).state_store, "__wrapped__", None)
        assert isinstance(store, PostgresStateStore)
        assert kept == store.pool_idle_seconds

    async def test_container_opens_and_closes_the_store(self, tmp_path: Path) -> None:
        """`async with container` opens the store (temp files cleaned) and closes it."""
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / ".s.crash001.tmp").write_text("x")
        async with build_container(_settings(tmp_path)):
            assert [] == list((tmp_path / "state").glob("*.tmp"))
