"""A known mix of missions for tests that count them: both flows, a tool failure, an LLM error."""

from __future__ import annotations

#: (agent_type, mission, expected status).
WORKLOAD: tuple[tuple[str, str, str], ...] = (
    ("lean", 'tool:calculator {"expression": "6*7"}\nsay done', "completed"),
    ("lean", "hello", "completed"),
    ("lean", "llm:error", "failed"),
    ("legacy", 'tool:calculator {"expression": "2**10"}', "completed"),
    ("legacy", 'tool:calculator {"expression": "1/0"}', "failed"),
)
