"""B5 emulator throughput: requests per second the emulator serves on one core.

The emulator runs pinned to one core; a load generator (``bench.load_gen``: aiohttp, many
requests in flight) runs in another process on the other core(s). The emulator's own CPU time
over the window says whether it was the bottleneck (about one core-second per second) and
gives its CPU cost per request, which bounds what it can serve: readers of B2 and B3 can tell
from it when a number measured the emulator rather than the client.
"""

from __future__ import annotations

import dataclasses
import json

import anyio

from bench import Section, procs
from orchestrator import config
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models

API_KEY = "sk-bench"
#: A run that stays ``in_progress``: what most polls see.
STALL = json.dumps([{"stall": True}])


@dataclasses.dataclass(frozen=True)
class Params:
    """The shape of one B5 measurement."""

    duration: float = 4.0
    concurrency: int = 32
    kinds: tuple[str, ...] = ("get_run", "create_run")


QUICK = Params(duration=1.0)

LABELS = {
    "get_run": "GET run (in_progress)",
    "create_run": "POST create run",
}


@dataclasses.dataclass
class Throughput:
    """One load's numbers."""

    kind: str
    requests: int
    errors: int
    seconds: float
    cpu: float
    emulator_cpu: float

    @property
    def rate(self) -> float:
        """Requests per second of wall time."""
        return self.requests / self.seconds

    @property
    def emulator_busy(self) -> float:
        """Core-seconds per second the emulator used (1.0: one core saturated)."""
        return self.emulator_cpu / self.seconds


async def _targets(base_url: str, kind: str, count: int) -> tuple[str, list[list[str]]]:
    """(assistant id, [[thread id, run id]...]): runs to read, or threads to create runs on."""
    api = config.ApiConfig(base_url=base_url)
    async with client_mod.AssistantsClient(api, api_key=API_KEY) as client:
        # No tools: the default script answers at once, so a finished run frees its thread.
        assistant = await client.create_assistant(model="gpt-4o")
        targets: list[list[str]] = []
        for _ in range(count):
            thread = await client.create_thread()
            run_id = ""
            if kind == "get_run":
                body = models.CreateRun(
                    assistant_id=assistant.id, metadata={"emulator_script": STALL}
                )
                run_id = (await client.create_run(thread.id, body)).id
            targets.append([thread.id, run_id])
        return assistant.id, targets


def measure(params: Params) -> list[Throughput]:
    """Load the emulator with each kind of request in turn."""
    cpus = procs.cores()
    emu_cpus = {cpus[-1]} if len(cpus) > 1 else None
    load_cpus = set(cpus[:-1]) if len(cpus) > 1 else None
    results = []
    with procs.EmulatorProcess(cpus=emu_cpus, queue_delay=0, think_delay=0) as emu:
        for kind in params.kinds:
            emu.reset()
            assistant_id, targets = anyio.run(_targets, emu.base_url, kind, params.concurrency)
            job = {
                "base_url": emu.base_url,
                "kind": kind,
                "concurrency": params.concurrency,
                "duration": params.duration,
                "targets": targets,
                "assistant_id": assistant_id,
                "emulator_pid": emu.pid,
            }
            got = procs.run_child("bench.load_gen", [], stdin=job, cpus=load_cpus)
            results.append(Throughput(kind=kind, **got))
    return results


def run(quick: bool) -> Section:
    """B5 for 4 s per kind of request (1 s when quick)."""
    params = QUICK if quick else Params()
    return report(params, measure(params))


def report(params: Params, results: list[Throughput]) -> Section:
    """The table and its notes."""
    headers = [
        "request",
        "requests/s",
        "capacity of one busy core",
        "emulator CPU per request",
        "emulator busy (cores)",
        "load generator busy (cores)",
        "requests",
        "errors",
    ]
    rows = [
        [
            LABELS.get(r.kind, r.kind),
            f"{r.rate:,.0f}",
            f"{r.requests / max(r.emulator_cpu, 1e-9):,.0f}/s",
            f"{r.emulator_cpu / max(r.requests, 1) * 1e6:.0f} µs",
            f"{r.emulator_busy:.2f}",
            f"{r.cpu / r.seconds:.2f}",
            str(r.requests),
            str(r.errors),
        ]
        for r in results
    ]
    idle = [
        LABELS.get(r.kind, r.kind)
        for r in results
        if r.emulator_busy < 0.9 and r.cpu / r.seconds < 0.9
    ]
    capped = (
        f" For {', '.join(idle)} neither process kept its core busy, so loopback round trips,"
        " not CPU, capped requests/s."
        if idle
        else ""
    )
    notes = [
        "Capacity of one busy core = requests / emulator CPU seconds: what the emulator serves"
        " with a core to itself, kept busy. Requests/s is what this run got." + capped + " B2"
        " and B3 report the emulator's CPU next to theirs: a client's number is its own while"
        " the emulator stays well below one core.",
        f"{params.concurrency} requests in flight from one aiohttp process for"
        f" {params.duration:g} s per kind, after one warm-up request per connection; the"
        " emulator runs with `--queue-delay 0 --think-delay 0` (GETs read runs kept"
        " `in_progress` by a stalling script; creates go to threads whose last run is over). "
        + procs.pinning_note("the load generator"),
    ]
    return Section(
        title="B5 emulator throughput: requests per second on one core",
        headers=headers,
        rows=rows,
        notes=notes,
    )
