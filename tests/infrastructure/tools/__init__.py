"""Tests of the built-in tools and the tool registry."""
