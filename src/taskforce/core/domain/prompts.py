"""The text conventions the agent flows use to talk to a model.

Both the legacy ``Agent`` and the embedded scripted provider rely on these, so
they are constants here rather than literals scattered over two layers.
"""

from __future__ import annotations

__all__ = [
    "FINAL_STEP_DESCRIPTION",
    "LEAN_SYSTEM_PROMPT",
    "LEGACY_SYSTEM_PROMPT",
    "MISSION_PREFIX",
    "OBSERVATION_PREFIX",
    "PARSE_ERROR_PREFIX",
    "PLAN_PROMPT",
    "STEP_PREFIX",
]

#: The first user message of a conversation starts with this, then the mission text.
MISSION_PREFIX = "Mission:\n"

#: A tool result fed back to the model as a user message (legacy JSON flow)
#: starts with this, followed by the tool result as JSON.
OBSERVATION_PREFIX = "Observation: "

#: The legacy flow announces each plan step with ``"Step {i}/{n}: {description}"``.
STEP_PREFIX = "Step "

#: Fed back once when the model's action is not valid JSON.
PARSE_ERROR_PREFIX = "Your last reply was not a valid JSON action: "

#: The description of the last step of every legacy plan.
FINAL_STEP_DESCRIPTION = "Give the final answer to the mission."

PLAN_PROMPT = (
    "Break the mission below into a short plan. Answer with JSON only: "
    '{"steps": ["step 1", "step 2", ...]}. The last step gives the final answer.\n\n'
)

LEGACY_SYSTEM_PROMPT = (
    "You carry out a mission step by step. For each step answer with one JSON "
    'object only: {"action": "tool_call", "tool": NAME, "args": {...}} to call a '
    'tool, or {"action": "finish", "answer": TEXT} when the step is done. '
    "Tool results come back as messages starting with 'Observation: '.\n"
    "Available tools:\n"
)

LEAN_SYSTEM_PROMPT = (
    "You carry out missions with the tools you are given. Call tools as needed, "
    "then answer the mission in plain text."
)
