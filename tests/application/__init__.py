"""Tests of taskforce.application."""
