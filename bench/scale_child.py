"""B3's driving process: ``python -m bench.scale_child ours|ours-gc|sdk``.

stdin: JSON ``{"base_url", "assistant_id", "runs", "poll": {...}, "interval_ms",
"max_connections", "emulator_pid"}``. Every run is created with its thread in one request
(``POST /threads/runs``) and driven through one tool round; all start at once. The baseline RSS
is read after imports, the client session and a warm-up run, just before the runs start; a
sampler reads ``VmRSS`` every ``SAMPLE_EVERY`` s, and the cyclic GC's collections are timed.
stdout: one JSON line (``ScaleResult``).
"""

from __future__ import annotations

import gc
import json
import re
import resource
import sys
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from bench import drive_sides, procs
from orchestrator import events
from orchestrator import orchestrator as orch_mod
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models

if TYPE_CHECKING:
    from openai.types.beta.threads.run_submit_tool_outputs_params import ToolOutput

SAMPLE_EVERY = 0.05
#: The ``ours-gc`` diagnostic's collector thresholds (CPython's default: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 10)
_VMRSS = re.compile(rb"^VmRSS:\s+(\d+) kB", re.MULTILINE)


class ScaleResult(msgspec.Struct, kw_only=True):
    """What one driving process reports."""

    runs: int
    #: KiB: VmRSS just before the runs start, its sampled peak, and ``ru_maxrss`` before and
    #: after the runs (a child's starts at its parent's RSS when spawned).
    baseline_rss_kib: int
    peak_rss_kib: int
    baseline_maxrss_kib: int
    maxrss_kib: int
    #: Most runs in flight at once: created (ours; started for the SDK) and not finished.
    max_inflight: int
    #: Whether ``max_inflight`` counts created runs (ours) or started ones (the SDK).
    counts_created: bool
    wall: float
    cpu: float
    #: CPU seconds spent in the cyclic GC, and its full (generation 2) collections.
    gc_cpu: float
    gc_full: int
    emulator_cpu: float
    requests: int
    outcomes: dict[str, int]


def rss_kib() -> int:
    """This process's resident set size now, from ``/proc/self/status``."""
    found = _VMRSS.search(Path("/proc/self/status").read_bytes())
    return int(found.group(1)) if found else 0


class Tracker:
    """Counts runs in flight and samples the RSS while they run."""

    def __init__(self, *, counts_created: bool) -> None:
        self.counts_created = counts_created
        self.started = self.created = self.finished = 0
        self.max_inflight = 0
        self.peak_rss = 0

    def update(self) -> None:
        begun = self.created if self.counts_created else self.started
        self.max_inflight = max(self.max_inflight, begun - self.finished)

    async def sampler(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_kib())
            with anyio.move_on_after(SAMPLE_EVERY):
                await stop.wait()


class GcMeter:
    """CPU time of the cyclic garbage collector's collections, while installed."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
            return
        self.cpu += time.process_time() - self._started
        self.full += info["generation"] == 2

    def __enter__(self) -> GcMeter:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self)


#: Drives one run to its end (the fast warm-up run when the flag is set); returns its outcome.
DriveOne = Callable[[bool], Awaitable[str]]


async def measure(job: dict[str, Any], drive_one: DriveOne, tracker: Tracker) -> ScaleResult:
    """One warm-up run, the baseline, then ``job["runs"]`` runs at once."""
    base_url: str = job["base_url"]
    await drive_one(True)
    tracker.created = 0
    outcomes: Counter[str] = Counter()

    async def one() -> None:
        tracker.started += 1
        tracker.update()
        try:
            outcomes[await drive_one(False)] += 1
        finally:
            tracker.finished += 1

    before = await anyio.to_thread.run_sync(procs.fetch_stats, base_url)
    gc.collect()
    baseline = rss_kib()
    baseline_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emulator_cpu = procs.cpu_seconds(job["emulator_pid"])
    cpu, wall = time.process_time(), time.perf_counter()
    stop = anyio.Event()
    with GcMeter() as collector:
        async with anyio.create_task_group() as outer:
            outer.start_soon(tracker.sampler, stop)
            async with anyio.create_task_group() as tg:
                for _ in range(job["runs"]):
                    tg.start_soon(one)
            stop.set()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emulator_cpu = procs.cpu_seconds(job["emulator_pid"]) - emulator_cpu
    after = await anyio.to_thread.run_sync(procs.fetch_stats, base_url)
    return ScaleResult(
        runs=job["runs"],
        baseline_rss_kib=baseline,
        peak_rss_kib=tracker.peak_rss,
        baseline_maxrss_kib=baseline_maxrss,
        maxrss_kib=maxrss,
        max_inflight=tracker.max_inflight,
        counts_created=tracker.counts_created,
        wall=wall,
        cpu=cpu,
        gc_cpu=collector.cpu,
        gc_full=collector.full,
        emulator_cpu=emulator_cpu,
        requests=procs.requests_between(before, after),
        outcomes=dict(outcomes),
    )


async def _ours(job: dict[str, Any]) -> ScaleResult:
    cfg = drive_sides.bench_config(job["base_url"], job["poll"], job["max_connections"])
    warm_cfg = drive_sides.bench_config(
        job["base_url"], job["poll"], job["max_connections"], warm=True
    )
    reg = drive_sides.registry()
    tracker = Tracker(counts_created=True)
    async with (
        client_mod.AssistantsClient(cfg.api, cfg.retry, api_key=drive_sides.API_KEY) as client,
        orch_mod.Orchestrator(cfg, registry=reg, client=client) as orch,
        orch_mod.Orchestrator(warm_cfg, registry=reg, client=client) as warm_orch,
    ):

        @orch.on(events.RunCreated)
        def created(event: events.RunCreated) -> None:
            tracker.created += 1
            tracker.update()

        message = models.MessageRequest(role="user", content="What is the weather in Paris?")

        async def drive_one(warm: bool) -> str:
            driver = warm_orch if warm else orch
            extra: dict[str, Any] = {"metadata": drive_sides.WARM_METADATA} if warm else {}
            result = await driver.create_thread_and_run(
                assistant_id=job["assistant_id"], messages=[message], **extra
            )
            return result.outcome if result.rounds == 1 else f"{result.outcome}/{result.rounds}"

        return await measure(job, drive_one, tracker)


async def _sdk(job: dict[str, Any]) -> ScaleResult:
    from openai import AsyncOpenAI, omit

    interval: int = job["interval_ms"]
    tracker = Tracker(counts_created=False)
    thread: Any = {"messages": [{"role": "user", "content": "What is the weather in Paris?"}]}
    async with AsyncOpenAI(base_url=job["base_url"], api_key=drive_sides.API_KEY) as client:

        async def drive_one(warm: bool) -> str:
            every = round(drive_sides.WARM_INTERVAL * 1000) if warm else interval
            run = await client.beta.threads.create_and_run_poll(
                assistant_id=job["assistant_id"],
                thread=thread,
                poll_interval_ms=every,
                metadata=drive_sides.WARM_METADATA if warm else omit,
            )
            rounds = 0
            while run.status == "requires_action" and run.required_action is not None:
                rounds += 1
                outputs: list[ToolOutput] = []
                for call in run.required_action.submit_tool_outputs.tool_calls:
                    value = drive_sides.weather(**json.loads(call.function.arguments))
                    outputs.append({"tool_call_id": call.id, "output": json.dumps(value)})
                run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
                    thread_id=run.thread_id,
                    run_id=run.id,
                    tool_outputs=outputs,
                    poll_interval_ms=every,
                )
            return run.status if rounds == 1 else f"{run.status}/{rounds}"

        return await measure(job, drive_one, tracker)


def main() -> None:
    """Drive the runs described on stdin with one side; print the result as JSON."""
    side = sys.argv[1]
    job = json.loads(sys.stdin.read())
    # The SDK marks every Assistants method deprecated; silenced here only.
    warnings.simplefilter("ignore", DeprecationWarning)
    if side == "ours-gc":
        gc.set_threshold(*GC_THRESHOLDS)
    result = anyio.run(_sdk if side == "sdk" else _ours, job)
    print(msgspec.json.encode(result).decode())


if __name__ == "__main__":
    main()
