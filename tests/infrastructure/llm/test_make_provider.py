"""``make_provider`` builds the provider the ``llm`` settings ask for."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from taskforce.config import LLMSettings, load_settings
from taskforce.errors import ConfigurationError
from taskforce.infrastructure.llm import (
    OpenAICompatibleProvider,
    ScriptedLLMProvider,
    make_provider,
)
from tests.support.fake_openai import FakeOpenAIServer


class TestMakeProvider:
    async def test_default_is_scripted(self) -> None:
        """The default settings give the scripted provider with the configured model."""
        provider = make_provider(LLMSettings(model="demo", scripted_latency_ms=0))

        assert isinstance(provider, ScriptedLLMProvider)
        assert "demo" == (await provider.complete([]))["model"]

    async def test_scripted_gets_max_retries(self) -> None:
        """``max_retries`` reaches the scripted provider, which retries like the real one."""
        provider = make_provider(LLMSettings(max_retries=1))
        mission = [{"role": "user", "content": "llm:fail server_error 2"}]

        result = await provider.complete(mission)  # type: ignore[arg-type]

        assert ["server_error"] * 2 == [a.error_type for a in result["attempts"]]

    def test_scripted_latency_is_applied(self) -> None:
        """``scripted_latency_ms`` reaches the provider."""
        provider = make_provider(LLMSettings(scripted_latency_ms=250))

        assert isinstance(provider, ScriptedLLMProvider)
        assert 250 == provider.latency_ms

    @pytest.mark.parametrize(
        "base_url",
        [
            None,
            "  ",
            "ftp://host/v1",
            "http://",
            "http://:8000/v1",
            "http://host:99999/v1",
            "http://host:port/v1",
            "https://exa mple.com/v1",
            "host:8000/v1",
        ],
    )
    def test_openai_needs_a_usable_base_url(
        self, monkeypatch: pytest.MonkeyPatch, base_url: str | None
    ) -> None:
        """``openai`` without an http(s) URL with a host stops at the settings, naming it.

        Before any provider is built (or any worker forked), with the variable and value.
        """
        monkeypatch.setenv("TASKFORCE_LLM__PROVIDER", "openai")
        if base_url is not None:
            monkeypatch.setenv("TASKFORCE_LLM__BASE_URL", base_url)
        with pytest.raises(ConfigurationError) as info:
            load_settings()
        assert "llm.base_url" == info.value.setting
        if base_url is not None:
            assert f"TASKFORCE_LLM__BASE_URL={base_url!r}" == info.value.source

    @pytest.mark.parametrize(
        "base_url", ["http://127.0.0.1:8000/v1", " https://api.example.com/v1 ", "http://[::1]/"]
    )
    async def test_a_usable_base_url_is_kept_stripped(self, base_url: str) -> None:
        """An http(s) URL with a host passes, without the spaces around it."""
        settings = LLMSettings(provider="openai", model="gpt-x", base_url=base_url)
        assert base_url.strip() == settings.base_url
        provider = make_provider(settings)
        assert isinstance(provider, OpenAICompatibleProvider)
        await provider.aclose()

    @pytest.mark.integration
    async def test_openai_uses_settings(self) -> None:
        """The OpenAI provider gets model, base URL and the secret key from the settings."""
        fake = FakeOpenAIServer()
        with fake.serve() as base_url:
            settings = LLMSettings(
                provider="openai",
                model="gpt-x",
                base_url=base_url,
                api_key=SecretStr("sk-from-settings"),
            )
            provider = make_provider(settings)
            assert isinstance(provider, OpenAICompatibleProvider)
            async with provider:
                result = await provider.complete([{"role": "user", "content": "hi"}])

        assert ("gpt-x", True) == (result["model"], result["success"])
        assert "Bearer sk-from-settings" == fake.requests[0].headers["authorization"]

    @pytest.mark.integration
    async def test_openai_without_a_key_never_sends_openai_api_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without llm.api_key the provider sends ``Bearer unused`` (the SDK needs a key),
        never the SDK's own ``OPENAI_API_KEY``, whatever llm.base_url points at; the
        llm.api_key row of docs/configuration.md says so."""
        from pathlib import Path

        monkeypatch.setenv("OPENAI_API_KEY", "sk-env-must-not-leave")
        fake = FakeOpenAIServer()
        with fake.serve() as base_url:
            provider = make_provider(LLMSettings(provider="openai", model="m", base_url=base_url))
            assert isinstance(provider, OpenAICompatibleProvider)
            async with provider:
                await provider.complete([{"role": "user", "content": "hi"}])
        assert "Bearer unused" == fake.requests[0].headers["authorization"]
        docs = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
        row = next(
            line
            for line in docs.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `llm.api_key` |")
        )
        assert "`Authorization: Bearer unused`" in row and "`OPENAI_API_KEY`" in row

    @pytest.mark.integration
    async def test_openai_gets_max_response_bytes(self) -> None:
        """``llm.max_response_bytes`` reaches the provider: a longer answer is refused."""
        fake = FakeOpenAIServer()
        with fake.serve() as base_url:
            settings = LLMSettings(
                provider="openai", model="m", base_url=base_url, max_response_bytes=1024
            )
            provider = make_provider(settings)
            assert isinstance(provider, OpenAICompatibleProvider)
            async with provider:
                short = await provider.complete([{"role": "user", "content": "hi"}])
                long = await provider.complete([{"role": "user", "content": "word " * 400}])

        assert (True, "invalid_response") == (short["success"], long.get("error_type"))
