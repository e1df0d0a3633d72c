"""B2R/B3R's contenders for the Responses API, each in a fresh process:
``python -m bench.responses_sides SIDE``.

stdin: JSON ``{"base_url", "runs", "interval_ms", "poll": {...}}``; stdout: one JSON line
(``Measured``). One untimed warm-up chain first; then ``runs`` chains at once, timed, with the
emulator's counters read just before and after and the process's resident memory sampled while
they are in flight.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

from bench import drive_sides, procs
from orchestrator import orchestrator as orch_mod

SIDES = ("sdk", "ours-poll", "ours-poll-default", "ours-stream")
QUESTION = "What is the weather in Paris?"
WARM = drive_sides.WARM_METADATA
_PAGE = 4096

#: Drives one chain to its end (the fast warm-up when the flag is set); returns its outcome.
DriveOne = Callable[[bool], Awaitable[str]]


class Measured(msgspec.Struct, kw_only=True):
    """What one contender's process reports."""

    runs: int
    cpu: float
    wall: float
    requests: int
    #: Resident memory while the runs were in flight, minus before they started (bytes).
    rss_growth: int
    outcomes: dict[str, int]


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE


async def timed(job: dict[str, Any], drive_one: DriveOne) -> Measured:
    """Warm up, then drive ``runs`` chains concurrently, timed, counted and sampled."""
    base_url: str = job["base_url"]
    outcomes: Counter[str] = Counter()
    await drive_one(True)
    peak = baseline = _rss()

    async def one() -> None:
        outcomes[await drive_one(False)] += 1

    async def sample() -> None:
        nonlocal peak
        while True:
            await anyio.sleep(0.05)
            peak = max(peak, _rss())

    before = await anyio.to_thread.run_sync(procs.fetch_stats, base_url)
    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        async with anyio.create_task_group() as runs:
            for _ in range(job["runs"]):
                runs.start_soon(one)
        tg.cancel_scope.cancel()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = await anyio.to_thread.run_sync(procs.fetch_stats, base_url)
    return Measured(
        runs=job["runs"],
        cpu=cpu,
        wall=wall,
        requests=procs.requests_between(before, after),
        rss_growth=peak - baseline,
        outcomes=dict(outcomes),
    )


async def _ours(job: dict[str, Any]) -> Measured:
    connections = max(100, job["runs"])
    cfg = drive_sides.bench_config(job["base_url"], job["poll"], connections)
    warm_cfg = drive_sides.bench_config(job["base_url"], job["poll"], connections, warm=True)
    reg = drive_sides.registry()
    async with (
        orch_mod.Orchestrator(cfg, registry=reg, api_key=drive_sides.API_KEY) as orch,
        orch_mod.Orchestrator(warm_cfg, registry=reg, api_key=drive_sides.API_KEY) as warm_orch,
    ):

        async def drive_one(warm: bool) -> str:
            driver = warm_orch if warm else orch
            extra: dict[str, Any] = {"metadata": WARM} if warm else {}
            result = await driver.respond(model="gpt-4o", input=QUESTION, **extra)
            return drive_sides._outcome(result.outcome, result.rounds)

        return await timed(job, drive_one)


async def _sdk(job: dict[str, Any]) -> Measured:
    from openai import AsyncOpenAI, omit

    interval = job["interval_ms"] / 1000
    tool: Any = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    async with AsyncOpenAI(base_url=job["base_url"], api_key=drive_sides.API_KEY) as client:
        # As the SDK's background-mode guide does it: poll while queued or in progress; run
        # the function calls; continue with previous_response_id; until no calls are left.
        async def drive_one(warm: bool) -> str:
            every = drive_sides.WARM_INTERVAL if warm else interval
            response = await client.responses.create(
                model="gpt-4o",
                input=QUESTION,
                tools=[tool],
                background=True,
                metadata=WARM if warm else omit,
            )
            rounds = 0
            while True:
                while response.status in ("queued", "in_progress"):
                    await anyio.sleep(every)
                    response = await client.responses.retrieve(response.id)
                calls = [i for i in response.output if i.type == "function_call"]
                if response.status != "completed" or not calls:
                    break
                rounds += 1
                outputs: Any = [
                    {
                        "type": "function_call_output",
                        "call_id": c.call_id,
                        "output": json.dumps(drive_sides.weather(**json.loads(c.arguments))),
                    }
                    for c in calls
                ]
                response = await client.responses.create(
                    model="gpt-4o",
                    previous_response_id=response.id,
                    input=outputs,
                    tools=[tool],
                    background=True,
                )
            _ = response.output_text
            return drive_sides._outcome(response.status or "?", rounds)

        return await timed(job, drive_one)


async def _main(side: str, job: dict[str, Any]) -> Measured:
    return await (_sdk(job) if side == "sdk" else _ours(job))


def main() -> None:
    """Run one side on the job read from stdin; print the result as JSON."""
    side = sys.argv[1]
    if side not in SIDES:
        raise SystemExit(f"unknown side {side!r}; one of {', '.join(SIDES)}")
    job = json.loads(sys.stdin.read())
    print(msgspec.json.encode(anyio.run(_main, side, job)).decode())


if __name__ == "__main__":
    main()
