"""Benchmarks against the official SDK; ``python -m bench`` runs them and writes BENCHMARKS.md.

Each benchmark is a module of this package exposing ``run(quick: bool) -> Section`` and listed in
``bench.__main__.BENCHMARKS``. Benchmarks report; nothing here asserts a time.
"""

from __future__ import annotations

import dataclasses
import timeit
from collections.abc import Callable, Mapping

__all__ = ["Section", "compare", "fmt_ratio", "fmt_time", "goal"]


@dataclasses.dataclass
class Section:
    """One benchmark's results: a table (ratios in the first columns) and notes under it."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = dataclasses.field(default_factory=list)
    #: How to rerun just this benchmark; the harness fills it in when left empty.
    command: str = ""


def compare(
    contenders: Mapping[str, Callable[[], object]], *, repeat: int, min_time: float
) -> dict[str, float]:
    """Best seconds per call of each contender.

    Each gets a loop count that makes one timing at least ``min_time`` long; the ``repeat``
    rounds interleave the contenders so that a noisy moment on a shared machine hits all of them
    rather than one.
    """
    timers = {name: timeit.Timer(fn) for name, fn in contenders.items()}
    loops = {name: _calibrate(timer, min_time) for name, timer in timers.items()}
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(repeat):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(loops[name]) / loops[name])
    return best


def _calibrate(timer: timeit.Timer, min_time: float) -> int:
    number = 1
    while True:
        took = timer.timeit(number)
        if took >= min_time:
            return number
        # Aim a little past min_time so the next try usually lands.
        number = max(number * 2, int(number * min_time * 1.2 / max(took, 1e-9)))


def fmt_time(seconds: float) -> str:
    """Per-op time and the ops/s it implies, e.g. ``9.48 µs (105k/s)``."""
    t = f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.2f} µs"
    rate = 1 / seconds
    r = (
        f"{rate / 1e6:.2f}M"
        if rate >= 1e6
        else f"{rate / 1e3:.1f}k"
        if rate >= 1e3
        else f"{rate:.0f}"
    )
    return f"{t} ({r}/s)"


def fmt_ratio(ratio: float) -> str:
    """A speed ratio, e.g. ``14.2x``."""
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def goal(
    label: str,
    measured: float,
    target: float,
    *,
    at_most: bool = False,
    fmt: Callable[[float], str] = fmt_ratio,
) -> str:
    """A note line saying whether a goal was met (a ratio unless ``fmt`` says otherwise)."""
    met = measured <= target if at_most else measured >= target
    bound = "<=" if at_most else ">="
    verdict = "met" if met else "**missed**"
    return f"{label}: {fmt(measured)} (goal {bound} {fmt(target)}): {verdict}"
