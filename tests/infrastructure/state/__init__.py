"""Tests of the session state stores."""
