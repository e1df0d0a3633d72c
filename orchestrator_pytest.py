"""pytest plugin of run-orchestrator: fixtures for testing tools with the real orchestrator.

Registered as a ``pytest11`` entry point. Importing it costs nothing: the orchestrator is
imported only when a test asks for one of these fixtures. Override any of them in a
``conftest.py`` (most often ``tool_registry``, to give tests your tools).

- ``emulator``: the bundled Assistants API emulator on loopback, in process, with fast timings.
- ``orchestrator_config``: a ``Config`` pointing at it, with fast polling.
- ``tool_registry``: the tools runs are answered with (default: ``@tool``'s default registry).
- ``orchestrator``: an ``Orchestrator`` wired to all three, inside ``async with``.

The async fixtures ask for ``anyio_backend``, so tests using them run under anyio's pytest
plugin without a marker. aiohttp needs asyncio: where trio is installed too, define
``anyio_backend`` to return ``"asyncio"`` in your ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from orchestrator import Config, Emulator, Orchestrator, ToolRegistry


@pytest.fixture
async def emulator(anyio_backend: object) -> AsyncIterator[Emulator]:
    """The bundled emulator, started for this test."""
    from orchestrator import testing

    async with testing.start_emulator() as emu:
        yield emu


@pytest.fixture
def orchestrator_config(emulator: Emulator) -> Config:
    """Settings that drive runs on the ``emulator`` fixture quickly."""
    from orchestrator import testing

    return testing.emulator_config(emulator)


@pytest.fixture
def tool_registry() -> ToolRegistry:
    """The registry whose tools answer runs; override it to test your own registry."""
    from orchestrator import tools

    return tools.default_registry


@pytest.fixture
async def orchestrator(
    anyio_backend: object, orchestrator_config: Config, tool_registry: ToolRegistry
) -> AsyncIterator[Orchestrator]:
    """An ``Orchestrator`` on the ``emulator`` fixture, answering with ``tool_registry``."""
    from orchestrator import Orchestrator, testing

    async with Orchestrator(
        orchestrator_config, registry=tool_registry, api_key=testing.TEST_API_KEY
    ) as orch:
        yield orch
