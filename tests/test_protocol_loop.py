"""Driving Responses chains end to end over loopback against the emulator: ``orch.respond``,
poll and stream (with cuts and resume), tool rounds, deadlines, cancel on abort, incomplete and
failed outcomes, and a resumed chain that never re-sends a round that took effect."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import msgspec
import pytest
from responses_support import until_done

from orchestrator import config, events, responses_driver, tools
from orchestrator import orchestrator as orch_mod
from orchestrator.emulator import Emulator
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import wire
from orchestrator.store import base as store_base

pytestmark = pytest.mark.anyio


def make_config(**sections: dict[str, Any]) -> config.Config:
    raw: dict[str, Any] = {
        "poll": {"initial_interval": 0.01, "max_interval": 0.05, "multiplier": 1.5},
        "retry": {"initial_backoff": 0.01, "max_backoff": 0.02, "attempts": 6},
        "tools": {"deadline_margin": 0.05, "timeout": 5.0},
        "run": {"cancel_timeout": 2.0},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return msgspec.convert(raw, config.Config)


@pytest.fixture
def registry() -> tools.ToolRegistry:
    reg = tools.ToolRegistry()

    @reg.tool
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: The first.
            b: The second.
        """
        return a + b

    @reg.tool
    def shout(text: str) -> str:
        """Say it louder.

        Args:
            text: What to say.
        """
        return text.upper()

    return reg


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.005, think_delay=0.01) as e:
        yield e


def _orch(emu: Emulator, registry: tools.ToolRegistry, **sections: dict[str, Any]) -> Any:
    cfg = make_config(api={"base_url": emu.base_url}, **sections)
    return orch_mod.Orchestrator(cfg, registry=registry, api_key="k")


SCRIPT = json.dumps(
    [
        {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
        {
            "tool_calls": [
                {"name": "shout", "arguments": {"text": "hi"}},
                {"name": "add", "arguments": {"a": 1, "b": 1}},
            ]
        },
        {"message": "sum {output:add}; all: {outputs}"},
    ]
)


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_respond_answers_every_round_and_reports_events(
    emu: Emulator, registry: tools.ToolRegistry, mode: str
) -> None:
    seen: list[events.Event] = []
    async with _orch(emu, registry, poll={"mode": mode}) as orch:
        result = await orch.respond(
            model="m",
            input="go",
            metadata={"emulator_script": SCRIPT},
            handler=seen.append,
        )
    assert result.ok
    assert result.rounds == 2
    assert [o.output for o in result.outputs] == ["5", "HI", "2"]
    assert result.reply is not None
    assert result.reply.startswith("sum 5; all: add -> 5")
    kinds = [type(e).__name__ for e in seen]
    assert kinds.count("ResponseCreated") == 3
    assert kinds.count("ToolRoundRequested") == 2
    assert kinds.count("ToolCallFinished") == 3
    assert kinds.count("OutputsSubmitted") == 2
    assert kinds[-1] == "ResponseFinished"
    finished = seen[-1]
    assert isinstance(finished, events.ResponseFinished)
    assert finished.outcome == "completed"
    assert {e.thread_id for e in seen} == {seen[0].run_id}  # the chain's first response
    if mode == "stream":
        text = "".join(e.text for e in seen if isinstance(e, events.MessageDelta))
        assert text == result.reply
    stats = emu.responses_stats()
    assert stats.responses == {"completed": 3}
    assert stats.outputs_received == 3
    assert stats.duplicate_outputs == 0
    # The last response carries the chain's client id for its round.
    metadata = result.obj.metadata or {}
    assert metadata[client_mod.CLIENT_ID_KEY].endswith(
        ":" + (result.obj.previous_response_id or "")
    )


async def test_stream_cuts_resume_after_the_last_event(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    emu.configure(fault_stream_cut=0.6, seed=3)
    seen: list[events.Event] = []
    async with _orch(emu, registry, poll={"mode": "stream"}) as orch:
        result = await orch.respond(
            model="m", input="go", metadata={"emulator_script": SCRIPT}, handler=seen.append
        )
    assert result.ok
    assert any(isinstance(e, events.StreamFallback) for e in seen)
    # Status changes are reported once each, whatever the cuts replayed.
    for response_id in {e.run_id for e in seen if isinstance(e, events.ResponseCreated)}:
        changes = [
            e.current
            for e in seen
            if isinstance(e, events.ResponseStatusChanged) and e.run_id == response_id
        ]
        assert len(changes) == len(set(changes))
    assert emu.responses_stats().duplicate_outputs == 0


async def test_deadline_cancels_a_stalled_response(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    stall = json.dumps([{"stall": True}])
    async with _orch(emu, registry, run={"run_timeout": 0.3}) as orch:
        result = await orch.respond(model="m", input="x", metadata={"emulator_script": stall})
    assert result.outcome == "timed_out"
    assert emu.responses_stats().responses == {"cancelled": 1}


async def test_caller_cancel_cancels_the_response(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    stall = json.dumps([{"stall": True}])
    async with _orch(emu, registry) as orch:
        with anyio.move_on_after(0.2):
            await orch.respond(model="m", input="x", metadata={"emulator_script": stall})
    assert emu.responses_stats().responses == {"cancelled": 1}


async def test_caller_cancel_during_the_create_cancels_the_response_it_made(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """The create is applied but its answer is slow when the caller goes away: the session
    finds the response by its client id and cancels it (nothing left running)."""
    emu.configure(slow_delay=0.4)
    emu.inject("slow", method="POST", path_suffix="/responses")
    stall = json.dumps([{"stall": True}])
    async with _orch(emu, registry) as orch:
        with anyio.move_on_after(0.1):
            await orch.respond(model="m", input="x", metadata={"emulator_script": stall})
        with anyio.fail_after(5):
            while emu.responses_stats().responses != {"cancelled": 1}:  # noqa: ASYNC110
                await anyio.sleep(0.02)  # the emulator's state, polled: no event to wait on


@pytest.mark.parametrize(
    ("round_", "outcome"),
    [({"incomplete": "max_output_tokens"}, "incomplete"), ({"fail": "server_error"}, "failed")],
)
async def test_incomplete_and_failed_outcomes(
    emu: Emulator, registry: tools.ToolRegistry, round_: dict[str, str], outcome: str
) -> None:
    script = json.dumps([round_])
    async with _orch(emu, registry) as orch:
        result = await orch.respond(model="m", input="hello", metadata={"emulator_script": script})
    assert result.outcome == outcome
    assert not result.ok
    if outcome == "incomplete":
        assert result.reply
        assert result.obj.incomplete_details == wire.IncompleteDetails("max_output_tokens")
    else:
        assert result.reply is None
        assert result.obj.error is not None


class MemoryLedger:
    """The ledger's round lifecycle in memory (the worker's is the store's)."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, store_base.CallRecord]] = {}
        self.recorded: list[str] = []

    async def confirm(self) -> None:
        pass

    def check(self) -> None:
        pass

    async def calls(self, object_id: str) -> dict[str, store_base.CallRecord]:
        return dict(self.records.get(object_id, {}))

    async def begin(self, object_id: str, call_ids: Sequence[str]) -> dict[str, int]:
        out = {}
        for cid in call_ids:
            rec = self.records.setdefault(object_id, {}).get(cid) or store_base.CallRecord(
                tool_call_id=cid
            )
            rec = msgspec.structs.replace(rec, starts=rec.starts + 1)
            self.records[object_id][cid] = rec
            out[cid] = rec.starts
        return out

    async def save(self, object_id: str, call_id: str, output: str) -> None:
        rec = self.records.setdefault(object_id, {}).get(call_id) or store_base.CallRecord(
            tool_call_id=call_id
        )
        self.records[object_id][call_id] = msgspec.structs.replace(rec, output=output)

    async def submitted(self, object_id: str, call_ids: Sequence[str]) -> None:
        for cid in call_ids:
            rec = self.records[object_id][cid]
            self.records[object_id][cid] = msgspec.structs.replace(rec, submitted=True)

    async def record(self, object_id: str) -> None:
        self.recorded.append(object_id)


async def test_resumed_chain_adopts_the_round_an_earlier_attempt_sent(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """Attempt 1 sent round 1 and died before recording the continuation; attempt 2 resumes
    from the recorded response, finds the continuation by its client id, sends nothing twice."""
    cfg = make_config(api={"base_url": emu.base_url})
    key = "job_1"
    body = responses_driver.request_body(
        registry, model="m", input="go", metadata={"emulator_script": SCRIPT}
    )
    ledger = MemoryLedger()

    async def nothing(event: events.Event) -> None:
        pass

    async with client_mod.ResponsesClient(cfg.api, cfg.retry, api_key="k") as client:
        first = await client.create(
            msgspec.structs.replace(
                body,
                background=True,
                metadata={"emulator_script": SCRIPT, client_mod.CLIENT_ID_KEY: f"{key}:open"},
            )
        )
        parent = await until_done(client, first.data.id)
        [call] = parent.function_calls
        await ledger.save(parent.id, call.call_id or "", "5")
        await client.create(
            wire.CreateResponse(
                model="m",
                previous_response_id=parent.id,
                input=[wire.InputItem.function_output(call.call_id or "", "5")],
                background=True,
                metadata={client_mod.CLIENT_ID_KEY: f"{key}:{parent.id}"},
            )
        )
        result = await responses_driver.drive(
            client,
            registry,
            cfg,
            body,
            emit=nothing,
            key=key,
            ledger=ledger,
            resume_id=parent.id,
            attempt=2,
        )
    assert result.ok
    assert result.rounds == 2  # the first one recovered, not sent again
    stats = emu.responses_stats()
    assert stats.duplicate_outputs == 0
    assert stats.responses == {"completed": 3}
    assert ledger.recorded[0] == parent.id
