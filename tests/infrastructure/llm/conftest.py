"""Fixtures of the provider tests: one fake OpenAI server per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_openai import FakeOpenAIServer


@pytest.fixture(scope="module", name="fake_server")
def fixture_fake_server() -> Iterator[tuple[FakeOpenAIServer, str]]:
    """One fake server (and its base URL) for the module; each test resets it."""
    fake = FakeOpenAIServer()
    with fake.serve() as base_url:
        yield fake, base_url


@pytest.fixture(name="fake")
def fixture_fake(fake_server: tuple[FakeOpenAIServer, str]) -> FakeOpenAIServer:
    """The module's fake server, reset for this test."""
    fake_server[0].reset()
    return fake_server[0]


@pytest.fixture(name="base_url")
def fixture_base_url(fake_server: tuple[FakeOpenAIServer, str]) -> str:
    """The module's fake server's base URL."""
    return fake_server[1]
