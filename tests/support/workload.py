"""A known mix of missions for tests that count them: both flows, a tool failure, an LLM error."""

from __future__ import annotations

from collections import Counter

import httpx

#: (agent_type, mission, expected status).
WORKLOAD: tuple[tuple[str, str, str], ...] = (
    ("lean", 'tool:calculator {"expression": "6*7"}\nsay done', "completed"),
    ("lean", "hello", "completed"),
    ("lean", "llm:error", "failed"),
    ("legacy", 'tool:calculator {"expression": "2**10"}', "completed"),
    ("legacy", 'tool:calculator {"expression": "1/0"}', "failed"),
)


def send(api: str, rounds: int) -> Counter[tuple[str, str]]:
    """Send WORKLOAD ``rounds`` times to ``api``, a new connection per mission.

    A new connection each time lets the kernel spread the missions over the workers
    that share the port. Each answer must be a 200 with the expected status.

    Returns:
        The missions sent, by (agent_type, status).
    """
    sent: Counter[tuple[str, str]] = Counter()
    for _ in range(rounds):
        for agent, mission, status in WORKLOAD:
            answer = httpx.post(
                f"{api}/api/v1/execute", json={"mission": mission, "agent_type": agent}, timeout=30
            )
            assert (200, status) == (answer.status_code, answer.json()["status"]), answer.text
            sent[(agent, status)] += 1
    return sent
