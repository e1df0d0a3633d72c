"""Token refresh under load: 500 concurrent Foundry runs while tokens rotate every 2 seconds."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import msgspec
import pytest
from foundry_support import EmulatorCredential, Token, token_counts

from orchestrator import config, tools
from orchestrator import orchestrator as orch_mod
from orchestrator.emulator import Emulator
from orchestrator.http import credentials
from orchestrator.protocols.assistants import models
from orchestrator.protocols.assistants.client import AssistantsClient

pytestmark = pytest.mark.anyio

RUNS = 500
TTL = 2.0  # the emulator's token lifetime: a rotation every 2 s
MARGIN = 0.5  # refreshed this long before expiry


class Recording(EmulatorCredential):
    """Keeps every token it was given, to look for them in the logs."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.tokens: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> Token:
        got = await super().get_token(*scopes, **kwargs)
        self.tokens.append(got.token)
        return got


async def test_500_runs_through_token_rotations(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    registry = tools.ToolRegistry()

    @registry.tool
    async def echo(text: str) -> str:
        """Echo.

        Args:
            text: What to say.
        """
        return text

    rounds = [
        {"tool_calls": [{"name": "echo", "arguments": {"text": "one"}}], "think_ms": 1500},
        {"tool_calls": [{"name": "echo", "arguments": {"text": "two"}}], "think_ms": 1500},
        {"message": "{outputs}", "think_ms": 1500},
    ]
    cfg = msgspec.convert(
        {
            "api": {"flavor": "foundry", "base_url": "http://x", "max_connections": 200},
            "poll": {"initial_interval": 0.5, "max_interval": 1.0, "jitter": 0.3},
            "retry": {"initial_backoff": 0.05, "max_backoff": 0.5, "attempts": 8},
        },
        config.Config,
    )
    async with Emulator(queue_delay=0.05, think_delay=0.05, foundry_token_ttl=TTL) as emu:
        api = msgspec.structs.replace(cfg.api, base_url=emu.foundry_endpoint)
        cfg = msgspec.structs.replace(cfg, api=api)
        source = Recording(emu.azure_endpoint)
        provider = credentials.EntraToken(source, margin=MARGIN)
        outcomes: list[str] = []
        started = time.monotonic()
        async with (
            AssistantsClient(api, cfg.retry, credential=provider) as client,
            orch_mod.Orchestrator(cfg, registry=registry, client=client) as orch,
        ):
            agent = await client.create_assistant(
                model="gpt-4o",
                tools=registry.definitions(),
                metadata={"emulator_script": json.dumps(rounds)},
            )

            async def one(i: int) -> None:
                thread = await client.create_thread()
                result = await orch.run(
                    thread_id=thread.id,
                    assistant_id=agent.id,
                    messages=[models.MessageRequest(role="user", content=f"run {i}")],
                )
                outcomes.append(result.outcome)

            async with anyio.create_task_group() as tg:
                for i in range(RUNS):
                    tg.start_soon(one, i)
        elapsed = time.monotonic() - started
        counts = await token_counts(emu.azure_endpoint)

    assert outcomes == ["completed"] * RUNS
    # One fetch per rotation: never two for the same expiry, however many requests wanted one.
    assert source.fetches == counts["issued"] == provider.cache.refreshes
    assert source.fetches <= elapsed / (TTL - MARGIN) + 2, (source.fetches, elapsed)
    assert source.fetches >= 3  # the runs outlived several tokens
    assert counts["rejected"] == 0  # refreshed ahead: no request waited for a 401
    lines = [r.getMessage() + " " + repr(r.__dict__) for r in caplog.records]
    leaked = [line for line in lines for tok in source.tokens if tok in line]
    assert leaked == []
    assert any("refreshed" in line for line in lines)
