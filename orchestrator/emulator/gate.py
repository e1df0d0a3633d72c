"""What every API request goes through before and after its handler.

Order: authentication (Foundry's: ``foundry_auth``), Azure's ``api-version``, the rate-limit
window, then a seeded fault draw (per-run faults for requests addressing a run that has them).
Errors become the API's JSON error bodies; every response gets ``x-request-id`` and
``x-ratelimit-*`` headers; each request is counted by route template and status.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
from aiohttp import web

from orchestrator.emulator import bodies, core, faults, foundry_auth, replies, settings

__all__ = ["AFTER_FAULT", "ENGINE", "INTERNAL_PREFIX", "middleware", "on_prepare"]

logger = logging.getLogger(__name__)

ENGINE: Final = web.AppKey("engine", core.Engine)
INTERNAL_PREFIX: Final = "/_emulator/"
AZURE_PREFIX: Final = "/openai/"
#: Set on a request whose answer will be replaced by a fault once the handler has run.
AFTER_FAULT: Final = web.RequestKey("after_fault", bool)
_LIMITS: Final = web.RequestKey("rate_limit_headers", dict[str, str])
_DROPPED: Final = web.RequestKey("dropped", bool)
_NO_KEY: Final = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_BAD_KEY: Final = (
    "Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
_AZURE_DENIED: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth, rate limit, faults, error bodies and counting around every API request.

    The emulator's own routes (``/_emulator/*``) get auth and error bodies only.
    """
    engine = request.app[ENGINE]
    internal = request.path.startswith(INTERNAL_PREFIX)
    try:
        if internal:
            response = await _serve_internal(engine, request, handler)
        else:
            response = await _serve(engine, request, handler)
    except replies.ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:  # the router's 404 and 405, aiohttp's 413
        if exc.status < 400:
            raise
        response = _http_error(request, exc).response()
    except Exception:
        logger.exception("emulator handler failed", extra={"path": request.path})
        response = replies.ApiError(500, "The emulator failed.", type="server_error").response()
    if not internal:
        status = "dropped" if request.get(_DROPPED) else str(response.status)
        engine.counters.requests[(_route_name(request), status)] += 1
    return response


def _http_error(request: web.Request, exc: web.HTTPException) -> replies.ApiError:
    """An error aiohttp raised, in the API's error shape."""
    if exc.status == 413:
        return bodies.too_large()
    if exc.status in (404, 405):
        what = "URL" if exc.status == 404 else "method"
        return replies.ApiError(exc.status, f"Invalid {what} ({request.method} {request.path})")
    return replies.ApiError(exc.status, exc.reason)


async def _serve_internal(
    engine: core.Engine, request: web.Request, handler: Handler
) -> web.StreamResponse:
    key = engine.settings.require_api_key
    if key is not None:  # either client's header will do: these routes serve both forms
        azure = "Authorization" not in request.headers and "api-key" in request.headers
        _authorize(request, key.get(), azure=azure)
    return await handler(request)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every answer carries."""
    headers = response.headers
    headers["x-request-id"] = "req_" + os.urandom(16).hex()
    headers["openai-version"] = "2020-10-01"
    for name, value in request.get(_LIMITS, faults.STATIC_LIMITS).items():
        headers.setdefault(name, value)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else '<unmatched>'}"


async def _serve(engine: core.Engine, request: web.Request, handler: Handler) -> web.StreamResponse:
    s = engine.settings
    azure = request.path.startswith(AZURE_PREFIX)
    if request.path.startswith(foundry_auth.PREFIX):
        foundry_auth.check(request, s)
    elif s.require_api_key is not None:
        _authorize(request, s.require_api_key.get(), azure=azure)
    if azure and "api-version" not in request.query:
        raise replies.ApiError(
            400,
            "Missing required query parameter: 'api-version'.",
            param="api-version",
            code="missing_required_parameter",
        )
    request[_LIMITS] = engine.faults.limit_headers(time.monotonic())
    fs, table = _fault_settings(engine, request)
    injection = None
    if engine.faults.injections:
        injection = engine.faults.injected(request.method, request.path)
    if injection is not None:
        kind: settings.FaultKind | None = injection.kind
        fs = msgspec.structs.replace(fs, fault_after_apply=injection.after_apply)
    else:
        kind = engine.faults.draw(table) if table else None
    if kind is None:
        return await handler(request)
    engine.counters.faults[kind] += 1
    logger.debug("injecting fault", extra={"fault": kind, "path": request.path})
    post = request.method == "POST"
    if kind == "slow":
        if post and fs.fault_after_apply:
            # It takes effect now; its answer comes late (after a client timeout, say).
            answer = await _answer(request, handler)
            await asyncio.sleep(fs.slow_delay)
            if answer is None:
                raise faults.error_for("500", fs)
            return answer
        await asyncio.sleep(fs.slow_delay)
        return await handler(request)
    if kind == "malformed":
        if post and not fs.fault_after_apply:
            return faults.malformed(None)
        return faults.malformed(await _answer(request, handler))
    if post and fs.fault_after_apply:
        await _answer(request, handler)  # it takes effect; the client never hears of it
    if kind == "drop":
        request[_DROPPED] = True
        return faults.drop(request)
    raise faults.error_for(kind, fs)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse | None:
    request[AFTER_FAULT] = True
    try:
        return await handler(request)
    except replies.ApiError:
        return None


def _fault_settings(
    engine: core.Engine, request: web.Request
) -> tuple[settings.FaultSettings, tuple[tuple[float, settings.FaultKind], ...]]:
    run_id = request.match_info.get("run_id")
    if run_id is not None:
        rs = engine.store.runs.get(run_id)
        if rs is not None and rs.faults is not None:
            return rs.faults, rs.fault_table
    return engine.settings, engine.faults.table


def _authorize(request: web.Request, key: str, *, azure: bool) -> None:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else None
    if azure and not given:
        given = request.headers.get("api-key")
    if azure and (not given or not hmac.compare_digest(given.encode(), key.encode())):
        raise replies.ApiError(401, _AZURE_DENIED, type=None, code="401")
    if not given:
        raise replies.ApiError(401, _NO_KEY)
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise replies.ApiError(401, _BAD_KEY, code="invalid_api_key")
