"""B2/B3 for the Responses API: many concurrent background chains with one tool round, ours vs
the SDK's hand-written poll loop (as its background-mode guide shows it).

The emulator runs in its own process (pinned to one core when there are two); each contender
drives the same number of fresh chains from its own fresh process (``bench.responses_sides``)
and reports that process's CPU time over the chains alone, and its resident-memory growth while
they are in flight (B3's memory per in-flight run). The emulator's counters give the requests.
"""

from __future__ import annotations

import dataclasses

import msgspec

from bench import Section, drive, procs
from bench import responses_sides as sides


@dataclasses.dataclass(frozen=True)
class Params:
    """The shape of one measurement."""

    runs: int = 200
    interval_ms: int = 1000
    queue_delay: float = 0.03
    think_delay: float = 1.3
    sides: tuple[str, ...] = ("sdk", "ours-poll", "ours-poll-default", "ours-stream")


QUICK = Params(
    runs=50, interval_ms=200, think_delay=0.25, sides=("sdk", "ours-poll", "ours-stream")
)

LABELS = {
    "sdk": "official SDK: background create + retrieve loop + previous_response_id",
    "ours-poll": "ours (`orch.respond`), poll mode, same fixed interval",
    "ours-poll-default": "ours, poll mode, default adaptive intervals",
    "ours-stream": "ours, stream mode (GET stream, resumable)",
}


@dataclasses.dataclass
class Outcome:
    """One contender's numbers."""

    side: str
    measured: sides.Measured
    emulator_cpu: float


def measure(params: Params) -> list[Outcome]:
    """Drive ``params.runs`` chains with each contender in turn; the emulator is reset between."""
    cpus = procs.cores()
    emu_cpus = {cpus[-1]} if len(cpus) > 1 else None
    child_cpus = set(cpus[:-1]) if len(cpus) > 1 else None
    results: list[Outcome] = []
    with procs.EmulatorProcess(
        cpus=emu_cpus, queue_delay=params.queue_delay, think_delay=params.think_delay
    ) as emu:
        for side in params.sides:
            emu.reset()
            job = {
                "base_url": emu.base_url,
                "runs": params.runs,
                "interval_ms": params.interval_ms,
                "poll": drive._poll_section(side, params.interval_ms / 1000),
            }
            emu_cpu = emu.cpu()
            got = procs.run_child("bench.responses_sides", [side], stdin=job, cpus=child_cpus)
            results.append(Outcome(side, msgspec.convert(got, sides.Measured), emu.cpu() - emu_cpu))
    return results


def run(quick: bool) -> Section:
    """The Responses rows of B2/B3 (``QUICK``: smaller, shorter)."""
    params = QUICK if quick else Params()
    return report(params, measure(params))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def report(params: Params, results: list[Outcome]) -> Section:
    """The table and its notes."""
    sdk = next((r for r in results if r.side == "sdk"), None)
    headers = [
        "contender",
        "CPU/run vs SDK",
        "client CPU per run",
        "client CPU per request",
        "requests per run",
        "memory per in-flight run",
        "wall time",
        "outcomes",
    ]
    rows = []
    for r in results:
        m = r.measured
        per_run = m.cpu / m.runs
        base = sdk.measured.cpu / sdk.measured.runs if sdk is not None else None
        rows.append(
            [
                LABELS.get(r.side, r.side),
                f"{per_run / base:.3f}x" if base else "-",
                _ms(per_run),
                _ms(m.cpu / max(m.requests, 1)),
                f"{m.requests / m.runs:.2f}",
                f"{m.rss_growth / m.runs / 1024:.1f} KiB",
                f"{m.wall:.2f} s",
                ", ".join(f"{k}: {v}" for k, v in sorted(m.outcomes.items())),
            ]
        )
    notes = [
        f"{params.runs} concurrent chains per contender; the emulator (separate process) queues"
        f" a response {params.queue_delay * 1e3:.0f} ms and thinks"
        f" {params.think_delay * 1e3:.0f} ms per round; its default script calls the one tool"
        " once, then answers in a continuation response.",
        f"Poll interval {params.interval_ms} ms on both sides (the SDK loop sleeps it between"
        " retrieves; ours `initial_interval = max_interval`, multiplier 1, jitter 0). Ours"
        " creates each response with a client id in its metadata and never re-sends a round;"
        " stream mode creates in the background, then follows `GET /responses/{id}?stream=true`.",
        "Memory per in-flight run: the peak resident-set growth of the contender's process while"
        " its chains were in flight, divided by their number (sampled every 50 ms).",
        "Client CPU: `time.process_time()` of the contender's fresh process over the chains"
        " alone (imports, set-up and one warm-up chain excluded). "
        + procs.pinning_note("each contender"),
    ]
    return Section(
        title="B2/B3 Responses: concurrent background chains with one tool round, ours vs the SDK",
        headers=headers,
        rows=rows,
        notes=notes,
    )
