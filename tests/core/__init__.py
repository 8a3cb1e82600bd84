"""Tests of taskforce.core."""
