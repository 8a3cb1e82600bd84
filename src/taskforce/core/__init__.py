"""Pure domain code: the protocols (ports) and the two agent flows."""
