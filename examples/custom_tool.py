"""A user's own tool, registered on a running container, shows up in ``/metrics``.

The tool below contains no instrumentation code at all: the container's tool
registry hands every tool out behind an observing proxy, including tools
registered after the container was built. Run it with::

    python examples/custom_tool.py

It runs one mission per agent flow (offline, with the scripted LLM) and prints
the tool's series from the ``/metrics`` page of the app.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import httpx

from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.interfaces import ToolResult
from taskforce.observability import configure_logging


class WordCountTool:
    """Counts the words of a text. A plain class: no base class, no metrics code."""

    name = "word_count"
    description = "Count the words of a text."
    parameters_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "The text to count."}},
        "required": ["text"],
        "additionalProperties": False,
    }

    async def execute(self, **params: Any) -> ToolResult:
        text = params.get("text")
        if not isinstance(text, str):
            return {"success": False, "error": "text must be a string"}
        return {"success": True, "output": len(text.split())}


async def main() -> None:
    configure_logging(fmt="console", level="warning")  # keep stdout for the metrics
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(state_dir=Path(tmp, "state"), workspace_dir=Path(tmp, "workspace"))
        async with build_container(settings) as container:
            # Registered after the build, while the container is serving.
            container.tool_registry.register(WordCountTool())
            app = create_app(container=container)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://taskforce") as http:
                for agent_type in ("lean", "legacy"):
                    response = await http.post(
                        "/api/v1/execute",
                        json={
                            "mission": 'tool:word_count {"text": "three little words"}',
                            "agent_type": agent_type,
                        },
                    )
                    result = response.json()
                    print(f"# {agent_type} mission: {result['status']}")
                scrape = await http.get(settings.metrics.path)
    for line in scrape.text.splitlines():
        if 'tool_name="word_count"' in line and "_bucket" not in line:
            print(line)


if __name__ == "__main__":
    asyncio.run(main())
