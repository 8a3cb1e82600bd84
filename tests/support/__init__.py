"""Helpers shared by the tests: live servers on 127.0.0.1 and binary lookup."""
