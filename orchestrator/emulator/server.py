"""The emulator as an async context manager, and as a process (``serve``)."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import anyio
from aiohttp import web

from orchestrator.emulator import app, core, faults, responses_app, responses_objects, stats
from orchestrator.emulator import settings as knobs

__all__ = ["Emulator", "serve"]

logger = logging.getLogger(__name__)


class Emulator:
    """A local Assistants API on loopback: ``async with Emulator(think_delay=0.01) as emu``.

    ``overrides`` are ``EmulatorSettings`` fields applied over ``settings``.
    """

    def __init__(
        self,
        settings: knobs.EmulatorSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **overrides: Any,
    ) -> None:
        base = settings if settings is not None else knobs.EmulatorSettings()
        self._engine = core.Engine(knobs.replace(base, **overrides) if overrides else base)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        #: ``http://HOST:PORT/v1`` once started.
        self.base_url = ""
        #: ``http://HOST:PORT``: the Azure form lives under ``/openai/...`` there.
        self.azure_endpoint = ""
        self.port = 0

    @property
    def settings(self) -> knobs.EmulatorSettings:
        """The settings in force."""
        return self._engine.settings

    def configure(self, **overrides: Any) -> None:
        """Change settings while running (``ConfigError`` for an unknown or invalid one)."""
        self._engine.configure(knobs.replace(self._engine.settings, **overrides))

    def inject(
        self,
        kind: knobs.FaultKind,
        *,
        method: str = "POST",
        path_suffix: str = "/runs",
        times: int = 1,
        after_apply: bool = True,
    ) -> None:
        """Give the next ``times`` requests of ``method`` whose path ends with ``path_suffix``
        the fault ``kind`` (before any random draw); ``after_apply``: a POST takes effect
        first and only its answer is lost (or late, for ``slow``)."""
        self._engine.faults.injections.append(
            faults.Injection(
                kind, method=method, path_suffix=path_suffix, times=times, after_apply=after_apply
            )
        )

    def stats(self) -> stats.EmulatorStats:
        """Requests by route and status, runs by status, faults (as ``GET /_emulator/stats``)."""
        return self._engine.stats()

    def responses_stats(self) -> responses_objects.ResponsesStats:
        """Responses by status, tool outputs and MCP approval answers received (as ``GET
        /_emulator/responses``)."""
        if self._runner is None:
            return responses_objects.ResponsesStats()
        return self._runner.app[responses_app.RESPONSES].stats()

    def reset(self) -> None:
        """Forget every object and count (as ``POST /_emulator/reset``)."""
        self._engine.reset()
        if self._runner is not None:
            self._runner.app[responses_app.RESPONSES].reset()

    async def __aenter__(self) -> Emulator:
        # Open streams would hold a graceful shutdown for its whole timeout (60 s by default).
        runner = web.AppRunner(
            app.build_app(self._engine),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=0.1,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, backlog=4096)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, self.port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.azure_endpoint = f"http://{shown}:{self.port}"
        self.base_url = self.azure_endpoint + "/v1"
        #: A Foundry project endpoint (``api.flavor: foundry``).
        self.foundry_endpoint = self.azure_endpoint + "/api/projects/emulator"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


async def serve(settings: knobs.EmulatorSettings, host: str, port: int) -> None:
    """Serve until cancelled; the first log line gives the base URL."""
    async with Emulator(settings, host=host, port=port) as emu:
        logger.info(
            "emulator listening on %s (Azure endpoint %s, Foundry project endpoint %s)",
            emu.base_url,
            emu.azure_endpoint,
            emu.foundry_endpoint,
            extra={"base_url": emu.base_url},
        )
        await anyio.sleep_forever()
