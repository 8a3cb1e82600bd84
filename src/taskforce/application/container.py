"""The dependency container: builds the service's objects and weaves in observability.

``build_container`` is the one place that decides whether metrics exist: with
``metrics.enabled`` it wraps the provider, registry, state store and executor in
the observability proxies; without it nothing is wrapped and nothing is paid.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from taskforce.application.executor import AgentExecutor
from taskforce.config import Settings
from taskforce.core.interfaces import (
    ExecutorProtocol,
    LLMProviderProtocol,
    StateStoreProtocol,
    ToolRegistryProtocol,
)
from taskforce.core.interfaces.closing import aclose_iterator
from taskforce.infrastructure.llm import make_provider
from taskforce.infrastructure.state import FileStateStore, PostgresStateStore, StateLimits
from taskforce.infrastructure.tools import (
    LEFTOVER_SECONDS,
    SessionFolders,
    ToolThreadPool,
    build_default_registry,
    remove_write_leftovers,
)

if TYPE_CHECKING:
    from taskforce.observability import MetricSet

__all__ = ["Container", "build_container", "make_state_store"]


@dataclass(frozen=True, slots=True)
class Container:
    """Everything a running taskforce service needs, built once per process (or per test)."""

    settings: Settings
    llm_provider: LLMProviderProtocol
    tool_registry: ToolRegistryProtocol
    state_store: StateStoreProtocol
    executor: ExecutorProtocol
    metrics: MetricSet | None = None
    tool_pool: ToolThreadPool | None = None
    session_folders: SessionFolders | None = None
    # The workspace's second look for a crash's temp files, while one is to come.
    _later: list[asyncio.Task[None]] = field(default_factory=list, init=False, repr=False)

    async def open(self) -> None:
        """Prepare what must be ready before the first mission: remove the temp files a crash
        left in the workspace and in ``state_dir``, connect the state store.

        A workspace temp file written just before the start (a worker killed and at once
        replaced) is left by the first look, as a live write's may be; a second look, in
        the background once ``LEFTOVER_SECONDS`` have passed, removes it if no write holds it.

        Raises:
            StateStoreUnavailableError: the state database cannot be reached.
        """
        pool = self.tool_pool
        if pool is not None and await remove_write_leftovers(self.settings.workspace_dir, pool):
            self._later.append(asyncio.create_task(self._look_again(pool)))
        open_store = getattr(self.state_store, "open", None)
        if open_store is not None:
            await open_store()

    async def _look_again(self, pool: ToolThreadPool) -> None:
        await asyncio.sleep(LEFTOVER_SECONDS)
        with contextlib.suppress(Exception):  # as the first look: nothing it finds is fatal
            await remove_write_leftovers(self.settings.workspace_dir, pool)

    async def aclose(self) -> None:
        """Release what the container holds: provider clients, store connections, the
        session folders' locks, tool threads.

        First the executor's missions still running in tasks of their own are cancelled
        and their records written, those still under way waited for a bounded time
        (``AgentExecutor.drain``), while the store is open.
        """
        for later in self._later:
            later.cancel()
        drain = getattr(self.executor, "drain", None)
        if drain is not None:
            with contextlib.suppress(Exception):
                await drain()
        for owner in (self.llm_provider, self.state_store):
            with contextlib.suppress(Exception):
                await aclose_iterator(owner)
        if self.session_folders is not None:
            self.session_folders.close()
        if self.tool_pool is not None:
            self.tool_pool.close()

    async def __aenter__(self) -> Container:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def make_state_store(settings: Settings) -> StateStoreProtocol:
    """Build the state store ``settings.state.backend`` names, with the history limits and
    the sessions' time to live.

    Raises:
        ConfigurationError: ``postgres`` is asked for but its driver is not installed.
    """
    state = settings.state
    limits = StateLimits(
        max_history=state.max_history,
        max_bytes=state.max_bytes,
        session_ttl_seconds=state.session_ttl_seconds or None,
    )
    if state.backend == "postgres" and state.dsn is not None:
        return PostgresStateStore(
            state.dsn.get_secret_value(),
            pool_size=state.pool_size,
            timeout_seconds=state.timeout_seconds,
            pool_idle_seconds=state.pool_idle_seconds,
            limits=limits,
        )
    return FileStateStore(settings.state_dir, limits=limits, threads=settings.state.threads)


def build_container(
    settings: Settings | None = None,
    *,
    llm_provider: LLMProviderProtocol | None = None,
    tool_registry: ToolRegistryProtocol | None = None,
    state_store: StateStoreProtocol | None = None,
) -> Container:
    """Build the objects of a taskforce service from its settings.

    Args:
        settings: the settings; defaults to ``Settings()`` (environment and defaults).
        llm_provider: a provider to use instead of the one ``settings.llm`` names
            (a user's own implementation of ``LLMProviderProtocol``).
        tool_registry: a registry to use instead of the built-in tools.
        state_store: a state store to use instead of the one ``settings.state`` names.

    Returns:
        The container; with ``settings.metrics.enabled`` its provider, registry,
        state store and executor are observability proxies and ``metrics`` holds
        their ``MetricSet``, otherwise ``metrics`` is ``None``. ``tool_pool``
        is the thread pool of ``settings.tools.threads`` threads the built-in
        file tools run their IO in (also when ``tool_registry`` is given, so
        the caller's tools may share it). ``session_folders`` is the workspace's
        session folders the sweep removes once idle, with ``state.session_ttl_seconds``
        set; ``None`` without.

    Raises:
        ConfigurationError: the settings describe a provider that cannot be built.
    """
    settings = Settings() if settings is None else settings
    llm = llm_provider if llm_provider is not None else make_provider(settings.llm)
    tool_pool = ToolThreadPool(settings.tools.threads)
    tools = (
        tool_registry
        if tool_registry is not None
        else build_default_registry(
            settings.workspace_dir,
            tool_pool,
            max_file_bytes=settings.tools.max_file_bytes,
            max_dir_entries=settings.tools.max_dir_entries,
            max_expression_chars=settings.tools.max_expression_chars,
            max_sleep_seconds=settings.tools.max_sleep_seconds,
            max_workspace_bytes=settings.tools.max_workspace_bytes,
            max_workspace_entries=settings.tools.max_workspace_entries,
        )
    )
    state = state_store if state_store is not None else make_state_store(settings)

    metrics: MetricSet | None = None
    if settings.metrics.enabled:
        from taskforce.observability import MetricSet, observe_process, weave

        metrics = MetricSet(
            max_label_values=settings.metrics.max_label_values,
            llm_provider=settings.llm.provider,
            llm_model=settings.llm.model,
            llm_prices={
                model: (price.input, price.output) for model, price in settings.llm.prices.items()
            },
        )
        observe_process(metrics)
        llm, tools, state = weave(
            llm_provider=llm,
            tool_registry=tools,
            state_store=state,
            metrics=metrics,
            # bound into the tool proxies now: they classify results as the agents do
            max_result_depth=settings.agent.max_result_depth,
        )

    # Only with a TTL: without one a mission does no work for its folder.
    ttl = settings.state.session_ttl_seconds
    folders = SessionFolders(settings.workspace_dir, ttl, tool_pool) if ttl > 0 else None
    executor: ExecutorProtocol = AgentExecutor(
        llm, tools, state, agent_settings=settings.agent, session_folders=folders
    )
    if metrics is not None:
        from taskforce.observability import weave_executor

        executor = weave_executor(executor, metrics)

    return Container(
        settings=settings,
        llm_provider=llm,
        tool_registry=tools,
        state_store=state,
        executor=executor,
        metrics=metrics,
        tool_pool=tool_pool,
        session_folders=folders,
    )
