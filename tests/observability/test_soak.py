"""Soak: missions through a container with metrics leave nothing of theirs behind.

A process runs for weeks; what a finished mission leaves in a long-lived object
(a proxy's cache, a metric family) piles up with traffic unless it is bounded.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from taskforce.application.container import build_container
from taskforce.config import Settings
from tests.support.tracing import traced

_OUTPUT_CHARS = 50_000
# a conversation past SCAN_LIMIT (16 messages) whose last message is a whole file's text
_LONG_MISSION = "\n".join(
    [
        'tool:file_write {"path": "big.txt", "content": "%s"}' % ("y" * _OUTPUT_CHARS),
        *(f'tool:calculator {{"expression": "1+{i}"}}' for i in range(9)),
        'tool:file_read {"path": "big.txt"}',
        "Report the file.",
    ]
)


@pytest.mark.slow  # thirty-three whole missions under tracemalloc: seconds
async def test_finished_missions_do_not_keep_their_tool_output(settings: Settings) -> None:
    """Thirty long missions, each reading a 50 KB file, leave less than five files' worth.

    The LLM proxy's context-pack estimate remembers a long conversation's last message;
    it must let it go with its mission, not keep one per mission for later ones.
    """
    async with build_container(settings) as container:
        assert container.metrics is not None

        async def run() -> None:
            result = await container.executor.execute_mission(_LONG_MISSION, agent_type="lean")
            assert "completed" == result.status, result.error

        for _ in range(3):  # warm-up: families, caches and the tool pool made
            await run()
        gc.collect()
        with traced():
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(30):
                await run()
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - before
    assert growth < 5 * _OUTPUT_CHARS
