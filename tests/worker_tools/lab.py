"""In-process worker tests: settings, tools the test can watch and hold, and waiting helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from orchestrator import config, metrics, tools, worker
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models
from orchestrator.store import base as store_base


def settings(db: Path, base_url: str, **worker_keys: Any) -> config.Config:
    """Fast polls, short leases, no health server; ``worker_keys`` override ``worker.*``."""
    raw: dict[str, Any] = {
        "api": {"base_url": base_url},
        "retry": {"attempts": 8, "initial_backoff": 0.01, "max_backoff": 0.05},
        "poll": {"initial_interval": 0.02, "max_interval": 0.1},
        "run": {"cancel_timeout": 2.0},
        "tools": {"modules": [], "timeout": 30.0, "deadline_margin": 1.0},
        "worker": {
            "store": "sqlite",
            "sqlite_path": str(db),
            "concurrency": 4,
            "lease_seconds": 1.0,
            "heartbeat_seconds": 0.2,
            "idle_poll_seconds": 0.02,
            "drain_timeout": 10.0,
            "health": None,
            "max_attempts": 20,
            **worker_keys,
        },
    }
    return msgspec.convert(raw, config.Config)


def client(cfg: config.Config, observer: metrics.Metrics | None = None) -> Any:
    """A client for ``cfg`` (use ``async with``)."""
    return client_mod.AssistantsClient(cfg.api, cfg.retry, api_key="sk-test", observer=observer)


class Lab:
    """A registry whose ``effect`` tool records every invocation and can be held on a gate.

    ``effect`` keeps the worker's contract for side-effecting tools: on ``attempt > 1`` it first
    looks whether its call already took effect; on attempt 1 it does not look, so a call re-run
    at attempt 1 shows as a duplicate in ``effects``.
    """

    def __init__(self) -> None:
        #: (tool call id, attempt) of every invocation, in order.
        self.calls: list[tuple[str, int]] = []
        #: Call ids whose side effect happened, once per time it happened.
        self.effects: list[str] = []
        #: Set when a held call has done its side effect and waits on ``gate``.
        self.holding = anyio.Event()
        #: Held calls wait for this (never set unless a test does).
        self.gate = anyio.Event()
        self.registry = tools.ToolRegistry()
        self.registry.register(tools.Tool(self.effect, name="effect"))

    async def effect(self, ctx: tools.ToolContext, hold: bool = False) -> str:
        """Do a side effect once per tool call.

        Args:
            hold: Wait for the test's gate after the side effect.
        """
        self.calls.append((ctx.tool_call_id, ctx.attempt))
        if ctx.attempt > 1 and ctx.tool_call_id in self.effects:
            return f"{ctx.tool_call_id}: done before"
        self.effects.append(ctx.tool_call_id)
        if hold:
            self.holding.set()
            await self.gate.wait()
        return f"{ctx.tool_call_id}: done at attempt {ctx.attempt}"


def script(*rounds: Sequence[bool], message: str = "all done: {outputs}", think_ms: int = 0) -> str:
    """An ``emulator_script``: one round per entry, one ``effect`` call per flag (hold or not)."""
    steps: list[dict[str, Any]] = [
        {"tool_calls": [{"name": "effect", "arguments": {"hold": h}} for h in calls]}
        for calls in rounds
    ]
    steps.append({"message": message})
    if think_ms:
        steps = [{**step, "think_ms": think_ms} for step in steps]
    return json.dumps(steps)


def job(
    assistant_id: str, emulator_script: str | None = None, **metadata: str
) -> store_base.CreateJob:
    """A create job on a new thread, its run following ``emulator_script``."""
    if emulator_script is not None:
        metadata["emulator_script"] = emulator_script
    return store_base.CreateJob(
        assistant_id=assistant_id,
        messages=(models.MessageRequest(role="user", content="go"),),
        overrides=store_base.RunOverrides(metadata=metadata or msgspec.UNSET),
    )


async def eventually(check: Callable[[], Awaitable[bool]], hang_guard: float = 20.0) -> None:
    """Wait until ``check()`` holds: polling, as it looks at state no event announces."""
    with anyio.fail_after(hang_guard):
        while not await check():  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def wait_status(
    c: client_mod.AssistantsClient, thread_id: str, run_id: str, status: str
) -> models.Run:
    """Poll a run until it reaches ``status``."""
    run: models.Run | None = None

    async def reached() -> bool:
        nonlocal run
        run = await c.retrieve_run(thread_id, run_id)
        return run.status == status

    await eventually(reached)
    assert run is not None
    return run


async def ghost_claim(st: store_base.JobStore, job_id: str) -> store_base.Job:
    """Claim the (only claimable) job for a worker that then died: its lease already lapsed."""
    job = await st.claim("ghost", lease_seconds=1.0, now=time.time() - 60)
    assert job is not None
    assert job.id == job_id
    return job


def messages(history: Sequence[store_base.JobEvent]) -> list[str]:
    """The text of a job's history."""
    return [h.message for h in history]


JOB_KEY = worker.JOB_METADATA_KEY
