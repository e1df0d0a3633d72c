"""The benchmarks B2-B5 still run end to end, in a tiny size; nothing here looks at a time."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# bench/ is a folder of the repository, not part of the installed package.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    Section,
    dispatch_overhead,
    drive,
    drive_responses,
    emulator_throughput,
    report,
    scale,
)

DRIVE = drive.Params(
    runs=2,
    interval_ms=20,
    queue_delay=0.005,
    think_delay=0.02,
    sides=("sdk", "floor", "ours-poll", "ours-stream"),
)
SCALE = scale.Params(
    contenders=(("ours", 6), ("ours-gc", 4), ("sdk", 3)),
    queue_delay=0.005,
    think_delay=0.05,
    poll=(("initial_interval", 0.03), ("max_interval", 0.05), ("multiplier", 1.5)),
    sdk_interval_ms=30,
)
DRIVE_RESPONSES = drive_responses.Params(
    runs=2, interval_ms=20, queue_delay=0.005, think_delay=0.02, sides=("sdk", "ours-stream")
)
DISPATCH = dispatch_overhead.Params(rounds=8, runs=2)
THROUGHPUT = emulator_throughput.Params(duration=0.2, concurrency=4)


@pytest.fixture(scope="module")
def measured() -> Iterator[dict[str, Future[Any]]]:
    """Each benchmark measured once; they spend most of their time starting child processes,
    so they run side by side (each has its own emulator)."""
    with ThreadPoolExecutor(max_workers=5) as pool:
        yield {
            "drive": pool.submit(drive.measure, DRIVE),
            "drive_responses": pool.submit(drive_responses.measure, DRIVE_RESPONSES),
            "scale": pool.submit(scale.measure, SCALE),
            "dispatch": pool.submit(dispatch_overhead.measure, DISPATCH),
            "throughput": pool.submit(emulator_throughput.measure, THROUGHPUT),
        }


def rendered(name: str, section: Section) -> str:
    assert section.rows
    assert all(len(row) == len(section.headers) for row in section.rows)
    return report.render(name, section, "now")


def test_drive_every_contender_completes_its_runs(measured: dict[str, Future[Any]]) -> None:
    results: list[drive.Outcome] = measured["drive"].result()
    assert [r.side for r in results] == list(DRIVE.sides)
    for r in results:
        assert r.measured.outcomes == {"completed": DRIVE.runs}, r.side
        assert r.measured.requests >= r.measured.run_requests > 0
    stream = results[-1].measured
    assert stream.run_requests == 2 * stream.runs
    assert "B2 drive" in rendered("drive", drive.report(DRIVE, results))


def test_drive_responses_every_contender_completes_its_chains(
    measured: dict[str, Future[Any]],
) -> None:
    results: list[drive_responses.Outcome] = measured["drive_responses"].result()
    assert [r.side for r in results] == list(DRIVE_RESPONSES.sides)
    for r in results:
        assert r.measured.outcomes == {"completed": DRIVE_RESPONSES.runs}, r.side
        # Two responses per chain, each created and read at least once.
        assert r.measured.requests >= 4 * r.measured.runs
    section = drive_responses.report(DRIVE_RESPONSES, results)
    assert "B2/B3 Responses" in rendered("drive_responses", section)


def test_scale_counts_runs_in_flight(measured: dict[str, Future[Any]]) -> None:
    results: list[scale.Measured] = measured["scale"].result()
    for m, (side, runs) in zip(results, SCALE.contenders, strict=True):
        assert m.side == side
        assert m.result.outcomes == {"completed": runs}
        assert 0 < m.result.max_inflight <= runs
        assert m.result.peak_rss_kib >= m.result.baseline_rss_kib > 0
    assert "B3 scale" in rendered("scale", scale.report(SCALE, results))


def test_dispatch_overhead_measures_every_case(measured: dict[str, Future[Any]]) -> None:
    results: list[dispatch_overhead.Latencies] = measured["dispatch"].result()
    cases = [(r.kind, r.calls) for r in results]
    assert cases == [(k, n) for k in dispatch_overhead.KINDS for n in dispatch_overhead.COUNTS]
    for r in results:
        assert len(r.in_process) == (DISPATCH.rounds // 4 if r.calls >= 32 else DISPATCH.rounds)
        assert len(r.answer_to_submit) == len(r.event_to_submit) == DISPATCH.runs
        assert len(r.event_to_tools_done) == DISPATCH.runs
    section = dispatch_overhead.report(DISPATCH, results)
    assert "B4 dispatch" in rendered("dispatch_overhead", section)


def test_emulator_throughput_serves_both_kinds(measured: dict[str, Future[Any]]) -> None:
    results: list[emulator_throughput.Throughput] = measured["throughput"].result()
    assert [r.kind for r in results] == list(THROUGHPUT.kinds)
    for r in results:
        assert r.requests > 0
        assert r.errors == 0
    section = emulator_throughput.report(THROUGHPUT, results)
    assert "B5 emulator" in rendered("emulator_throughput", section)


@pytest.mark.postgres
def test_worker_store_runs_jobs_through_both_stores(pg_server: Any) -> None:
    from bench import worker_store

    params = worker_store.Params(jobs=4, setups=(("sqlite", 1), ("postgres", 2)), concurrency=4)
    section = worker_store.measure(params)
    assert [row[0] for row in section.rows] == ["sqlite, 1 worker", "postgres, 2 workers"]
    assert "B6 worker store" in rendered("worker_store", section)
