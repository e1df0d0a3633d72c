"""A local Assistants API (runs, steps, messages) with a scripted assistant and fault injection.

::

    async with Emulator(think_delay=0.02, poll_after_ms=50) as emu:
        client = AsyncOpenAI(base_url=emu.base_url, api_key="x")

Modules: ``settings`` (knobs, CLI flags), ``core`` (the API's operations and rules),
``lifecycle`` (lazy, timestamp-driven run transitions), ``script`` and ``schema`` (the scripted
assistant), ``gate`` (auth, rate limit, faults, counting), ``faults``, ``sse``, ``app`` (routes),
``server`` (``Emulator``, ``serve``).

Runs move by time, not per request: a run is queued for ``queue_delay``, in progress for
``think_delay`` (or the round's ``think_ms``), then reaches its round's outcome. Metadata keys
``emulator_script`` and ``emulator_faults`` (JSON strings, up to 65536 characters, unlike the
API's 512) script a run or give it its own faults; see ``script`` and ``FaultSettings``.
Per-run faults apply to requests that address the run by id and to its streams.
"""

from __future__ import annotations

from orchestrator.emulator.server import Emulator, serve
from orchestrator.emulator.settings import (
    EmulatorSettings,
    FaultSettings,
    add_arguments,
    settings_from_args,
)
from orchestrator.emulator.stats import EmulatorStats

__all__ = [
    "Emulator",
    "EmulatorSettings",
    "EmulatorStats",
    "FaultSettings",
    "add_arguments",
    "serve",
    "settings_from_args",
]
