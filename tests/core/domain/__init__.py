"""Tests of taskforce.core.domain."""
