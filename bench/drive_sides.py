"""B2's contenders, each run in a fresh process: ``python -m bench.drive_sides SIDE``.

stdin: JSON ``{"base_url", "assistant_id", "threads": [...], "interval_ms", "poll": {...}}``;
stdout: one JSON line (``Measured``). The first thread drives one untimed warm-up run, so lazy
imports and first-use set-up count on neither side (a fast one: its script thinks for
milliseconds and it polls every ``WARM_INTERVAL``); then the other runs go at once, timed, with
the emulator's counters read just before and after.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from bench import procs
from orchestrator import config, tools
from orchestrator import orchestrator as orch_mod
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models

if TYPE_CHECKING:
    from openai.types.beta.threads.run_submit_tool_outputs_params import ToolOutput

SIDES = (
    "sdk",
    "sdk-aiohttp",
    "floor",
    "ours-poll",
    "ours-poll-sync",
    "ours-poll-default",
    "ours-stream",
)
API_KEY = "sk-bench"
RUN_ROUTES = "/runs"  # every run endpoint's route template contains it

#: Seconds between the warm-up run's polls.
WARM_INTERVAL = 0.01
#: The warm-up run's metadata: the benchmark's tool round, thought about for 5 ms each.
WARM_METADATA = {
    "emulator_script": json.dumps(
        [
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}], "think_ms": 5},
            {"message": "Sunny.", "think_ms": 5},
        ]
    )
}

#: Drives one run on a thread to its end (the fast warm-up when the flag is set); returns its
#: outcome (``completed``, ...).
DriveOne = Callable[[str, bool], Awaitable[str]]


class Measured(msgspec.Struct, kw_only=True):
    """What one contender's process reports."""

    runs: int
    cpu: float
    wall: float
    requests: int
    run_requests: int
    outcomes: dict[str, int]


def weather(city: str) -> dict[str, Any]:
    """What both sides' tool answers: a small JSON object."""
    return {"city": city, "temperature_c": 21, "sky": "clear"}


def registry(*, sync: bool = False) -> tools.ToolRegistry:
    """Our registry with the one tool of the benchmark (async unless ``sync``)."""
    reg = tools.ToolRegistry()
    if sync:

        @reg.tool(name="get_weather")
        def get_weather_sync(city: str) -> dict[str, Any]:
            """The weather in a city.

            Args:
                city: The city's name.
            """
            return weather(city)

    else:

        @reg.tool
        async def get_weather(city: str) -> dict[str, Any]:
            """The weather in a city.

            Args:
                city: The city's name.
            """
            return weather(city)

    return reg


def bench_config(
    base_url: str, poll: dict[str, Any], max_connections: int, *, warm: bool = False
) -> config.Config:
    """Our settings for one side: the emulator's URL, the side's poll section (with the warm-up
    run's intervals when ``warm``)."""
    if warm:
        poll = {**poll, "initial_interval": WARM_INTERVAL, "max_interval": WARM_INTERVAL}
    raw = {"api": {"base_url": base_url, "max_connections": max_connections}, "poll": poll}
    return msgspec.convert(raw, config.Config)


async def timed(job: dict[str, Any], drive_one: DriveOne) -> Measured:
    """Warm up on the first thread, then drive the others concurrently, timed and counted."""
    base_url: str = job["base_url"]
    warmup, *threads = job["threads"]
    outcomes: Counter[str] = Counter()
    await drive_one(warmup, True)

    async def one(thread_id: str) -> None:
        outcomes[await drive_one(thread_id, False)] += 1

    before = await anyio.to_thread.run_sync(procs.fetch_stats, base_url)
    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for thread_id in threads:
            tg.start_soon(one, thread_id)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = await anyio.to_thread.run_sync(procs.fetch_stats, base_url)
    return Measured(
        runs=len(threads),
        cpu=cpu,
        wall=wall,
        requests=procs.requests_between(before, after),
        run_requests=procs.requests_between(before, after, contains=RUN_ROUTES),
        outcomes=dict(outcomes),
    )


def _outcome(status: str, rounds: int) -> str:
    return status if rounds == 1 else f"{status} after {rounds} rounds"


async def _ours(job: dict[str, Any], sync: bool) -> Measured:
    connections = max(100, len(job["threads"]))
    cfg = bench_config(job["base_url"], job["poll"], connections)
    warm_cfg = bench_config(job["base_url"], job["poll"], connections, warm=True)
    reg = registry(sync=sync)
    async with (
        client_mod.AssistantsClient(cfg.api, cfg.retry, api_key=API_KEY) as client,
        orch_mod.Orchestrator(cfg, registry=reg, client=client) as orch,
        orch_mod.Orchestrator(warm_cfg, registry=reg, client=client) as warm_orch,
    ):

        async def drive_one(thread_id: str, warm: bool) -> str:
            driver = warm_orch if warm else orch
            extra: dict[str, Any] = {"metadata": WARM_METADATA} if warm else {}
            result = await driver.run(
                thread_id=thread_id, assistant_id=job["assistant_id"], **extra
            )
            return _outcome(result.outcome, result.rounds)

        return await timed(job, drive_one)


async def _sdk(job: dict[str, Any], *, aiohttp_backend: bool) -> Measured:
    from openai import AsyncOpenAI, DefaultAioHttpClient, omit

    interval: int = job["interval_ms"]
    assistant_id: str = job["assistant_id"]
    tools_by_name = {"get_weather": weather}
    http = DefaultAioHttpClient() if aiohttp_backend else None
    async with AsyncOpenAI(base_url=job["base_url"], api_key=API_KEY, http_client=http) as client:
        runs = client.beta.threads.runs

        # As the SDK's function-calling guide does it: poll to requires_action, run the
        # tools, submit and poll to the end, then read the reply.
        async def drive_one(thread_id: str, warm: bool) -> str:
            every = round(WARM_INTERVAL * 1000) if warm else interval
            run = await runs.create_and_poll(
                thread_id=thread_id,
                assistant_id=assistant_id,
                poll_interval_ms=every,
                metadata=WARM_METADATA if warm else omit,
            )
            rounds = 0
            while run.status == "requires_action" and run.required_action is not None:
                rounds += 1
                outputs: list[ToolOutput] = []
                for call in run.required_action.submit_tool_outputs.tool_calls:
                    fn = tools_by_name[call.function.name]
                    value = fn(**json.loads(call.function.arguments))
                    outputs.append({"tool_call_id": call.id, "output": json.dumps(value)})
                run = await runs.submit_tool_outputs_and_poll(
                    thread_id=thread_id,
                    run_id=run.id,
                    tool_outputs=outputs,
                    poll_interval_ms=every,
                )
            if run.status == "completed":
                await client.beta.threads.messages.list(
                    thread_id=thread_id, run_id=run.id, order="asc"
                )
            return _outcome(run.status, rounds)

        return await timed(job, drive_one)


async def _floor(job: dict[str, Any]) -> Measured:
    """The least a poll loop can do: plain aiohttp, msgspec decoding, no retries, no events."""
    import aiohttp

    interval = job["interval_ms"] / 1000
    base: str = job["base_url"]
    headers = {"Authorization": f"Bearer {API_KEY}", "OpenAI-Beta": "assistants=v2"}
    run_decoder = msgspec.json.Decoder(models.Run)
    messages_decoder = msgspec.json.Decoder(models.ListMessagesResponse)
    create = msgspec.json.encode({"assistant_id": job["assistant_id"]})
    warm_create = msgspec.json.encode(
        {"assistant_id": job["assistant_id"], "metadata": WARM_METADATA}
    )
    connector = aiohttp.TCPConnector(limit=max(100, len(job["threads"])))
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def call(method: str, path: str, body: bytes | None = None) -> bytes:
            async with session.request(method, base + path, data=body) as resp:
                resp.raise_for_status()
                return await resp.read()

        async def drive_one(thread_id: str, warm: bool) -> str:
            runs = f"/threads/{thread_id}/runs"
            run = run_decoder.decode(await call("POST", runs, warm_create if warm else create))
            rounds = 0
            while not run.is_terminal:
                if run.requires_action:
                    rounds += 1
                    outputs = [
                        models.ToolOutput(
                            tool_call_id=c.id,
                            output=json.dumps(weather(**json.loads(c.function.arguments))),
                        )
                        for c in run.tool_calls
                        if c.function is not None
                    ]
                    body = msgspec.json.encode({"tool_outputs": outputs})
                    path = f"{runs}/{run.id}/submit_tool_outputs"
                    run = run_decoder.decode(await call("POST", path, body))
                    continue
                await anyio.sleep(WARM_INTERVAL if warm else interval)
                run = run_decoder.decode(await call("GET", f"{runs}/{run.id}"))
            if run.status == "completed":
                path = f"/threads/{thread_id}/messages?run_id={run.id}&order=asc"
                messages_decoder.decode(await call("GET", path))
            return _outcome(run.status, rounds)

        return await timed(job, drive_one)


async def _main(side: str, job: dict[str, Any]) -> Measured:
    if side in ("sdk", "sdk-aiohttp"):
        return await _sdk(job, aiohttp_backend=side == "sdk-aiohttp")
    if side == "floor":
        return await _floor(job)
    return await _ours(job, sync=side == "ours-poll-sync")


def main() -> None:
    """Run one side on the job read from stdin; print the result as JSON."""
    side = sys.argv[1]
    if side not in SIDES:
        raise SystemExit(f"unknown side {side!r}; one of {', '.join(SIDES)}")
    job = json.loads(sys.stdin.read())
    # The SDK marks every Assistants method deprecated; silenced here only.
    warnings.simplefilter("ignore", DeprecationWarning)
    print(msgspec.json.encode(anyio.run(_main, side, job)).decode())


if __name__ == "__main__":
    main()
