"""Soak: hostile traffic through the whole app holds a bounded amount of state.

Every mission a new session, a new model name reported, an unknown tool asked for,
a random 404 path and query: once the label caps are reached, no container on a
long-lived object (metric families and the label guard, the proxies' caches, the
executor's and the store's locks and tasks) grows, and neither does a scrape.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from taskforce.api.server import create_app
from taskforce.application.container import Container, build_container
from taskforce.config import Settings
from taskforce.core.interfaces.llm import ChatMessage, LLMResult
from taskforce.infrastructure.llm import ScriptedLLMProvider

_RANDOM = random.Random(16)


def _word() -> str:
    return "".join(_RANDOM.choices(string.ascii_lowercase + string.digits, k=10))


class _NewModelEachCall(ScriptedLLMProvider):
    """Reports a model never seen before on every call, as a hostile endpoint could."""

    async def complete(
        self, messages: Sequence[ChatMessage], model: str | None = None, *args: Any, **kwargs: Any
    ) -> LLMResult:
        return await super().complete(messages, f"model-{_word()}", *args, **kwargs)


def _missions() -> list[str]:
    """One mission of each kind, with words never seen before."""
    return [
        f"tool:nope_{_word()} {{}}\n{_word()}",
        f'tool:calculator {{"expression": "1/0"}}\n{_word()}',
        f'tool:file_read {{"path": "{_word()}.txt"}}\n{_word()}',
        f'tool:calculator {{"expression": "6*7"}}\n{_word()}',
        f"llm:error\n{_word()}",
    ]


def _held(container: Container) -> dict[str, int]:
    """The sizes of the containers long-lived objects hold, by name.

    Without a run of the cyclic collector: what a mission held must be freed when it
    ends (a failed streamed mission's frames once sat in a reference cycle, and with
    them its session's lock in the executor's weak table, until the collector ran)."""
    metrics, registry, llm = container.metrics, container.tool_registry, container.llm_provider
    executor, store = container.executor.__wrapped__, container.state_store.__wrapped__  # type: ignore[attr-defined]
    assert metrics is not None
    sizes = {
        "unpriced_models": len(metrics.unpriced_models),
        "llm.bundles": len(llm._self_families.bundles),  # type: ignore[attr-defined]
        "llm.resolved": len(llm._self_families.resolved),  # type: ignore[attr-defined]
        "tools.bundles": len(registry._self_families.bundles),  # type: ignore[attr-defined]
        "tools.cached": len(registry._self_tools),  # type: ignore[attr-defined]
        "tools.unknown": len(registry._self_unknown),  # type: ignore[attr-defined]
        "executor.locks": len(executor._locks),
        "executor.background": len(executor._background),
        "executor.writes": len(executor._records._writes),
        "store.locks": len(store._locks),
    }
    for name, family in metrics._families.items():
        sizes[f"{name}.children"] = len(family.children)
        sizes[f"{name}.aliases"] = len(family._aliases)
    for (metric, label), state in metrics.guard._states.items():
        sizes[f"guard.{metric}.{label}"] = len(state.admitted) + len(state.memo)
    return sizes


async def _rounds(client: httpx.AsyncClient, count: int) -> None:
    """Each round: every kind of mission in both flows and streamed, two 404s, a 404 session."""
    for _ in range(count):
        for mission in _missions():
            for agent_type in ("lean", "legacy"):
                body = {"mission": mission, "agent_type": agent_type}
                body["session_id"] = f"s{uuid.uuid4().hex}"
                answer = await client.post("/api/v1/execute", json=body)
                assert 200 == answer.status_code, answer.text
            streamed = await client.post("/api/v1/execute/stream", json={"mission": mission})
            assert 200 == streamed.status_code
        missing = await client.get(f"/{_word()}/{_word()}?{_word()}={_word()}")
        assert 404 == missing.status_code
        await client.post(f"/api/v1/{_word()}", content=_word())
        await client.get(f"/api/v1/sessions/s{uuid.uuid4().hex}")


def _series(scrape: str) -> int:
    return sum(1 for line in scrape.splitlines() if line and not line.startswith("#"))


@pytest.mark.slow
async def test_hostile_traffic_grows_no_state_past_the_caps(tmp_path: Any) -> None:
    """After the label caps fill, 300 more hostile missions add no entry anywhere."""
    settings = Settings(
        state_dir=tmp_path / "state",
        workspace_dir=tmp_path / "workspace",
        metrics={"max_label_values": 4},
    )
    container = build_container(settings, llm_provider=_NewModelEachCall())
    app = create_app(container=container)
    async with (
        container,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        await _rounds(client, 10)
        await client.get("/metrics")  # the scrape's own series, from the next one on
        scrape = (await client.get("/metrics")).text
        held = _held(container)
        await _rounds(client, 20)
        assert _series(scrape) == _series((await client.get("/metrics")).text)
        assert held == _held(container)
