"""Credentials: refresh ahead, one refresh for all, 401 retried once, secrets never shown."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest
from foundry_support import EmulatorCredential, Token, token_counts

from orchestrator import config, errors
from orchestrator.emulator import Emulator
from orchestrator.http import credentials
from orchestrator.protocols.assistants.client import AssistantsClient

pytestmark = pytest.mark.anyio


class Counting:
    """A fetch that hands out numbered tokens living ``ttl`` seconds."""

    def __init__(self, ttl: float | None = 3600.0) -> None:
        self.ttl = ttl
        self.fetches = 0

    async def __call__(self) -> credentials.AccessToken:
        self.fetches += 1
        await anyio.sleep(0.01)  # let concurrent callers pile up behind the refresh
        expires = None if self.ttl is None else time.time() + self.ttl
        return credentials.AccessToken(config.Secret(f"tok-{self.fetches}"), expires)


async def test_concurrent_callers_share_one_fetch() -> None:
    fetch = Counting()
    cache = credentials.TokenCache(fetch, margin=60)
    got: list[credentials.AccessToken] = []

    async def one() -> None:
        got.append(await cache.get_token())

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(one)
    assert fetch.fetches == 1
    assert {t.secret.get() for t in got} == {"tok-1"}


async def test_refreshes_ahead_of_expiry() -> None:
    fetch = Counting(ttl=30)
    cache = credentials.TokenCache(fetch, margin=60)  # every token is "about to expire"
    first = await cache.get_token()
    second = await cache.get_token()
    assert (first.secret.get(), second.secret.get()) == ("tok-1", "tok-2")
    long_lived = credentials.TokenCache(Counting(ttl=3600), margin=60)
    assert (await long_lived.get_token()) is (await long_lived.get_token())


async def test_a_refused_token_is_replaced_once_for_all_callers() -> None:
    fetch = Counting()
    cache = credentials.TokenCache(fetch, margin=60)
    old = await cache.get_token()
    fresh: list[credentials.AccessToken] = []

    async def refused() -> None:
        fresh.append(await cache.get_token(refused=old))

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(refused)
    assert fetch.fetches == 2
    assert {t.secret.get() for t in fresh} == {"tok-2"}
    # A late caller refusing the old token gets the new one without another fetch.
    assert (await cache.get_token(refused=old)).secret.get() == "tok-2"
    assert fetch.fetches == 2


async def test_env_token_is_read_again_when_refused() -> None:
    env = {"FOUNDRY_TOKEN": "first"}
    provider = credentials.EnvToken("FOUNDRY_TOKEN", env=env)
    token = await provider.get_token()
    assert token.headers() == {"Authorization": "Bearer first"}
    env["FOUNDRY_TOKEN"] = "second"
    assert (await provider.get_token()).secret.get() == "first"  # cached while it works
    assert (await provider.get_token(refused=token)).secret.get() == "second"
    env["FOUNDRY_TOKEN"] = ""
    with pytest.raises(errors.ConfigError, match="FOUNDRY_TOKEN"):
        await credentials.EnvToken("FOUNDRY_TOKEN", env=env).get_token()


async def test_secrets_never_show() -> None:
    secret = "very-secret-value"
    token = credentials.AccessToken(config.Secret(secret), 1.0)
    things: list[Any] = [
        token,
        credentials.StaticKey(secret, header="api-key"),
        credentials.EnvToken("X", env={"X": secret}),
        credentials.EntraToken(EmulatorCredential("http://x")),
    ]
    for thing in things:
        assert secret not in repr(thing)
        assert secret not in str(thing)


async def test_entra_failures_become_authentication_errors() -> None:
    class Broken:
        async def get_token(self, *scopes: str, **kwargs: Any) -> Token:
            raise RuntimeError("no credential source available")

    with pytest.raises(errors.AuthenticationError, match="no credential source"):
        await credentials.EntraToken(Broken()).get_token()


def test_from_config_picks_the_credential() -> None:
    def api(**kw: Any) -> config.ApiConfig:
        return msgspec.convert(kw, config.ApiConfig)

    foundry = api(flavor="foundry", base_url="https://r.services.ai.azure.com/api/projects/p")
    assert foundry.api_version == "v1"
    assert isinstance(credentials.from_config(foundry, {}), credentials.EntraToken)
    token = api(flavor="foundry", base_url="https://x", credential="token", api_key_env="T")
    assert isinstance(credentials.from_config(token, {"T": "t"}), credentials.EnvToken)
    assert credentials.from_config(api(), {}) is None
    assert isinstance(
        credentials.from_config(api(), {"OPENAI_API_KEY": "k"}), credentials.StaticKey
    )


class Revoked:
    """Claims its tokens live an hour; the emulator expires them far sooner (a revoked or
    rotated token: only the server's 401 tells)."""

    def __init__(self, root: str) -> None:
        self.inner = EmulatorCredential(root)

    async def get_token(self, *scopes: str, **kwargs: Any) -> Token:
        got = await self.inner.get_token(*scopes)
        return Token(got.token, time.time() + 3600)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.02, foundry_token_ttl=0.3) as e:
        yield e


async def test_a_401_is_retried_once_after_one_refresh(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = Revoked(emu.azure_endpoint)
    api = config.ApiConfig(flavor="foundry", base_url=emu.foundry_endpoint, credential="entra")
    retry = config.RetryConfig(initial_backoff=0.01, max_backoff=0.02)
    async with AssistantsClient(api, retry, credential=credentials.EntraToken(source)) as client:
        thread = await client.create_thread()
        await anyio.sleep(0.4)  # the token is dead now, though it claims otherwise
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(client.list_messages, thread.id)
    assert source.inner.fetches == 2  # the first token, and one refresh for 50 refusals
    counts = await token_counts(emu.azure_endpoint)
    assert counts["issued"] == 2
    assert 1 <= counts["rejected"] <= 50
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "401; retrying with a refreshed token" in text
    assert "emu." not in text  # no token in any log line


async def test_a_token_refused_again_fails_with_authentication_error(emu: Emulator) -> None:
    api = config.ApiConfig(flavor="foundry", base_url=emu.foundry_endpoint, credential="token")
    provider = credentials.StaticKey("not-a-token", header="bearer")
    async with AssistantsClient(api, credential=provider) as client:
        with pytest.raises(errors.AuthenticationError) as info:
            await client.create_thread()
    assert "not-a-token" not in str(info.value)


async def test_entra_closes_only_the_default_credential_it_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Closable(EmulatorCredential):
        closed = 0

        async def get_token(self, *scopes: str, **kwargs: Any) -> Token:
            return Token("t", time.time() + 3600)

        async def close(self) -> None:
            self.closed += 1

    made = Closable("http://x")
    monkeypatch.setattr(credentials, "_default_azure_credential", lambda: made)
    provider = credentials.EntraToken()
    assert (await provider.get_token()).secret.get() == "t"
    api = config.ApiConfig(flavor="foundry", base_url="http://127.0.0.1:9/api/projects/p")
    async with AssistantsClient(api, credential=provider):
        pass
    assert made.closed == 1  # the client closed the provider, which closed what it made
    passed_in = Closable("http://x")
    await credentials.EntraToken(passed_in).aclose()
    assert passed_in.closed == 0  # the caller's to close
