"""Exactly once for Responses chains under ambiguity, as ``test_exactly_once`` for runs: the
emulator applies faulted POSTs before losing (or delaying past the client's timeout) their
answers, cuts streams, and answers 2xx with bodies cut in half. Every chain must reach its end
with its reply; no tool may run twice for one call; no round may be sent twice (one response
per client id, no second output for a call); no response may be left active."""

from __future__ import annotations

import collections
import json
import logging
from typing import Any

import anyio
import msgspec
import pytest

from orchestrator import config, tools
from orchestrator import orchestrator as orch_mod
from orchestrator.emulator import Emulator
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import wire

pytestmark = pytest.mark.anyio

FAULT_MIX = {
    "fault_429": 0.03,
    "fault_500": 0.04,
    "fault_503": 0.04,
    "fault_drop": 0.04,
    "fault_malformed": 0.03,
    "fault_slow": 0.02,
}
NO_FAULTS = dict.fromkeys(FAULT_MIX, 0.0) | {"fault_stream_cut": 0.0}
CLIENT_TIMEOUT = 0.5
REPLY = "all done"
SCRIPT = json.dumps(
    [
        {
            "tool_calls": [
                {"name": "note", "arguments": {"key": "a"}},
                {"name": "note", "arguments": {"key": "b"}},
            ]
        },
        {"tool_calls": [{"name": "note", "arguments": {"key": "c"}}]},
        {"message": REPLY},
    ]
)


def settings(mode: str, base_url: str) -> config.Config:
    return msgspec.convert(
        {
            "api": {"base_url": base_url, "timeout": CLIENT_TIMEOUT, "max_connections": 64},
            "poll": {"mode": mode, "initial_interval": 0.02, "max_interval": 0.1},
            "retry": {"attempts": 10, "initial_backoff": 0.01, "max_backoff": 0.1},
            "tools": {"timeout": 5.0, "deadline_margin": 0.05},
            "run": {"cancel_timeout": 5.0, "run_timeout": 60.0},
        },
        config.Config,
    )


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_a_fault_mix_leaves_every_chain_exactly_once(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    chains = 80
    runs: collections.Counter[str] = collections.Counter()
    reg = tools.ToolRegistry()

    @reg.tool
    async def note(key: str, ctx: tools.ToolContext) -> str:
        """Write down a key (a side effect).

        Args:
            key: What to write down.
        """
        runs[ctx.tool_call_id] += 1
        await anyio.lowlevel.checkpoint()
        return f"noted {key}"

    results: list[Any] = []
    async with Emulator(queue_delay=0.005, think_delay=0.01) as emu:
        cfg = settings(mode, emu.base_url)
        emu.configure(
            seed=99 if mode == "poll" else 77,
            fault_after_apply=True,
            fault_stream_cut=0.1,
            slow_delay=CLIENT_TIMEOUT * 1.5,
            **FAULT_MIX,
        )
        async with orch_mod.Orchestrator(cfg, registry=reg, api_key="sk-test") as orch:

            async def one(i: int) -> None:
                result = await orch.respond(
                    model="gpt-4o", input=f"job {i}", metadata={"emulator_script": SCRIPT}
                )
                results.append(result)

            async with anyio.create_task_group() as tg:
                for i in range(chains):
                    tg.start_soon(one, i)
        faults = dict(emu.stats().faults)
        emu.configure(**NO_FAULTS)
        stats = emu.responses_stats()
        async with client_mod.ResponsesClient(cfg.api, cfg.retry, api_key="k") as client:
            everything: list[wire.Response] = []
            after = None
            while True:
                page = await client.list_responses(limit=100, after=after)
                everything += page.data
                if not page.has_more:
                    break
                after = page.data[-1].id
    print(f"\n{mode}: {chains} chains, faults {sorted(faults.items())}")
    kinds = ["429", "500", "503", "drop", "malformed", "slow"]
    kinds += ["stream_cut"] if mode == "stream" else []
    for kind in kinds:
        assert faults.get(kind, 0) > 0, kind
    # Every chain reached its end with its reply, after its two rounds.
    assert len(results) == chains
    assert collections.Counter(r.outcome for r in results) == {"completed": chains}
    assert all(r.reply == REPLY for r in results)
    assert all(r.rounds == 2 and len(r.outputs) == 3 for r in results)
    # No tool ran twice; no round was sent twice; nothing is left active.
    assert len(runs) == 3 * chains
    assert set(runs.values()) == {1}
    assert stats.duplicate_outputs == 0
    assert stats.outputs_received == 3 * chains
    refs = collections.Counter((r.metadata or {}).get(client_mod.CLIENT_ID_KEY) for r in everything)
    assert len(everything) == 3 * chains
    assert set(refs.values()) == {1}
    assert stats.responses == {"completed": 3 * chains}
