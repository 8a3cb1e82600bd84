"""Tests that run the real Prometheus binaries, or check the files operators deploy with them."""
