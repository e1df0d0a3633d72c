"""The worker's ``/healthz`` and ``/metrics`` endpoints, served by aiohttp.web."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import msgspec
from aiohttp import web

from orchestrator import config, errors

__all__ = ["HealthStatus", "serve"]

log = logging.getLogger(__name__)


class HealthStatus(msgspec.Struct, frozen=True):
    """The body of ``/healthz``."""

    status: str
    worker_id: str
    in_flight: int
    time: float


async def serve(
    address: str,
    status: Callable[[], HealthStatus],
    metrics: Callable[[], Awaitable[tuple[bytes, str]]],
    *,
    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status`` gets the bound ``(host, port)`` (port 0 picks one)."""
    host, port = config.split_address(address, "worker.health")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(status()), content_type="application/json")

    async def metrics_page(request: web.Request) -> web.Response:
        body, content_type = await metrics()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except (OSError, ValueError, OverflowError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise errors.ConfigError(
                f"worker.health: cannot listen on {address}: {reason}"
            ) from None
        bound = runner.addresses[0]
        log.info(
            "health and metrics on http://%s:%s/", bound[0], bound[1], extra={"action": "health"}
        )
        task_status.started((bound[0], bound[1]))
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
