"""A user's own LLM provider, observed like the built-in ones without any metrics code.

Pass the provider to ``build_container``; with metrics enabled the container
wraps it in the LLM proxy, so its requests, latency, tokens and context sizes
land in ``/metrics``. The provider below has no ``stream`` method, and its
proxy does not pretend to have one either. Run it with::

    python examples/custom_provider.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from taskforce.api.server import create_app
from taskforce.application.container import build_container
from taskforce.config import Settings
from taskforce.core.interfaces import ChatMessage, LLMResult, ToolCall, ToolSchema, Usage
from taskforce.observability import configure_logging


class ArithmeticProvider:
    """A tiny rule-based "model": asks the calculator once, then answers with its result."""

    model = "arithmetic-1"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        tools: Sequence[ToolSchema] | None = None,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        used = model or self.model
        usage: Usage = {"prompt_tokens": sum(len(m["content"] or "") for m in messages) // 4}
        tool_results = [m for m in messages if m["role"] == "tool"]
        if not tool_results:
            arguments = {"expression": "6*7"}
            call: ToolCall = {"id": "call-1", "name": "calculator", "arguments": arguments}
            usage["completion_tokens"] = 12
            return {
                "success": True,
                "content": None,
                "tool_calls": [call],
                "model": used,
                "usage": usage,
            }
        usage["completion_tokens"] = 5
        output = json.loads(tool_results[-1]["content"] or "{}").get("output")
        answer = f"The answer is {output}."
        return {"success": True, "content": answer, "tool_calls": [], "model": used, "usage": usage}

    async def generate(
        self,
        prompt: str,
        context: Mapping[str, Any] | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return {"success": False, "error": "this provider only chats", "model": model or self.model}


async def main() -> None:
    configure_logging(fmt="console", level="warning")  # keep stdout for the metrics
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(state_dir=Path(tmp, "state"), workspace_dir=Path(tmp, "workspace"))
        async with build_container(settings, llm_provider=ArithmeticProvider()) as container:
            print("# provider proxied, still streams?", hasattr(container.llm_provider, "stream"))
            app = create_app(container=container)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://taskforce") as http:
                response = await http.post(
                    "/api/v1/execute", json={"mission": "What is 6*7?", "agent_type": "lean"}
                )
                result = response.json()
                print(f"# lean mission: {result['status']}: {result['final_message']}")
                scrape = await http.get(settings.metrics.path)
    for line in scrape.text.splitlines():
        is_ours = 'model="arithmetic-1"' in line or line.startswith("taskforce_context_pack")
        if is_ours and "_bucket" not in line:
            print(line)


if __name__ == "__main__":
    asyncio.run(main())
