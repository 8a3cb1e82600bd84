"""The mission context: context variables set and reset by the scope, never structlog's."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from taskforce.core.interfaces.context import (
    NO_AGENT,
    current_agent_type,
    current_mission_id,
    current_session_id,
    enter_mission,
    exit_mission,
    mission_scope,
)


class TestMissionScope:
    def test_defaults_outside_a_mission(self) -> None:
        """Outside any mission agent_type is 'none' and the ids are None."""
        assert (NO_AGENT, None, None) == (
            current_agent_type(),
            current_session_id(),
            current_mission_id(),
        )
        assert "none" == NO_AGENT

    def test_sets_variables_only(self) -> None:
        """Inside the scope the getters see the mission; structlog's context is the executor's."""
        with mission_scope("s-1", "m-1", "legacy"):
            assert ("legacy", "s-1", "m-1") == (
                current_agent_type(),
                current_session_id(),
                current_mission_id(),
            )
            assert {} == structlog.contextvars.get_contextvars()

    def test_resets_after_an_exception(self) -> None:
        """The scope restores the previous values and lets the exception through."""
        error = RuntimeError("boom")
        with pytest.raises(RuntimeError) as caught, mission_scope("s", "m", "lean"):
            raise error
        assert error is caught.value
        assert NO_AGENT == current_agent_type()
        assert {} == structlog.contextvars.get_contextvars()

    def test_nested_scope_restores_the_outer_one(self) -> None:
        """Leaving an inner scope brings back the outer mission, not the defaults."""
        with mission_scope("s-out", "m-out", "lean"):
            with mission_scope("s-in", "m-in", "legacy"):
                assert "legacy" == current_agent_type()
            assert ("lean", "m-out") == (current_agent_type(), current_mission_id())

    async def test_tasks_started_inside_inherit_the_mission(self) -> None:
        """A task created inside the scope sees the mission even after the scope closed."""
        seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        gate = asyncio.Event()

        async def child() -> None:
            await gate.wait()
            seen.set_result(current_agent_type())

        with mission_scope("s", "m", "legacy"):
            task = asyncio.create_task(child())
        gate.set()
        await task
        assert "legacy" == seen.result()
        assert NO_AGENT == current_agent_type()

    async def test_concurrent_missions_do_not_mix(self) -> None:
        """Two missions running concurrently each see their own agent_type."""

        async def mission(agent_type: str) -> list[str]:
            seen = []
            with mission_scope("s", agent_type, agent_type):
                for _ in range(3):
                    await asyncio.sleep(0)
                    seen.append(current_agent_type())
            return seen

        lean, legacy = await asyncio.gather(mission("lean"), mission("legacy"))
        assert (["lean"] * 3, ["legacy"] * 3) == (lean, legacy)


class TestEnterExit:
    def test_exit_restores_what_enter_set(self) -> None:
        """exit_mission with the tokens of enter_mission restores the previous context."""
        tokens = enter_mission("s", "m", "lean")
        assert "lean" == current_agent_type()
        exit_mission(tokens)
        assert (NO_AGENT, None) == (current_agent_type(), current_session_id())
