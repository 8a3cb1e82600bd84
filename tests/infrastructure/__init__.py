"""Tests of the infrastructure adapters."""
