"""B5's load generator, in its own process: ``python -m bench.load_gen``.

stdin: JSON ``{"base_url", "kind": "get_run" | "create_run", "concurrency", "duration",
"targets": [[thread_id, run_id], ...], "emulator_pid"}``; each worker keeps one request in
flight on its own target for ``duration`` seconds, after one warm-up request each that opens
the connections. stdout: one JSON line ``{"requests", "errors", "seconds", "cpu",
"emulator_cpu"}``: this process's and the emulator's CPU seconds over the timed window.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import aiohttp
import anyio

from bench import procs

API_KEY = "sk-bench"


async def _load(job: dict[str, Any]) -> dict[str, Any]:
    base: str = job["base_url"]
    kind: str = job["kind"]
    targets: list[list[str]] = job["targets"]
    concurrency: int = job["concurrency"]
    headers = {"Authorization": f"Bearer {API_KEY}", "OpenAI-Beta": "assistants=v2"}
    create = json.dumps({"assistant_id": job.get("assistant_id", "")}).encode()
    done = errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(index: int, until: float) -> None:
            nonlocal done, errors
            thread_id, run_id = targets[index % len(targets)]
            if kind == "get_run":
                method, url, body = "GET", f"{base}/threads/{thread_id}/runs/{run_id}", None
            else:
                method, url, body = "POST", f"{base}/threads/{thread_id}/runs", create
            while True:
                async with session.request(method, url, data=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1
                    else:
                        errors += 1
                if time.perf_counter() >= until:
                    return

        # Open the connections first, so the window times requests, not handshakes.
        async with anyio.create_task_group() as tg:
            for i in range(concurrency):
                tg.start_soon(worker, i, 0.0)
        done = errors = 0
        emulator_cpu = procs.cpu_seconds(job["emulator_pid"])
        cpu, start = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(concurrency):
                tg.start_soon(worker, i, start + job["duration"])
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        emulator_cpu = procs.cpu_seconds(job["emulator_pid"]) - emulator_cpu
    return {
        "requests": done,
        "errors": errors,
        "seconds": seconds,
        "cpu": cpu,
        "emulator_cpu": emulator_cpu,
    }


def main() -> None:
    """Run the load described on stdin; print the counts as JSON."""
    job = json.loads(sys.stdin.read())
    print(json.dumps(anyio.run(_load, job)))


if __name__ == "__main__":
    main()
