"""The agent flows: the legacy plan-and-execute ``Agent`` and the tool-calling ``LeanAgent``."""
