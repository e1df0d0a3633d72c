"""Foundry mode: the runs API under a project endpoint, as Azure AI Foundry Agent Service serves it.

Every route is also served under ``/api/projects/{project}`` (any project name), where
``foundry_auth`` checks ``api-version`` and the bearer token. ``submit_tool_outputs`` there also
takes ``tool_approvals`` (the answer to ``submit_tool_approval``). ``POST /_emulator/token``
plays Entra ID: it hands out a token valid for ``foundry_token_ttl`` seconds (``{"token",
"expires_on"}``); ``GET /_emulator/tokens`` counts tokens issued and requests refused.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from orchestrator.emulator import (
    core,
    foundry_auth,
    foundry_rounds,
    gate,
    replies,
    sse,
)
from orchestrator.protocols.assistants import models

__all__ = ["PROJECT_ROOT", "install"]

#: The project path the emulator's ``foundry_endpoint`` names (any other name works too).
PROJECT_ROOT: Final = "/api/projects/emulator"
_PROJECT: Final = "/api/projects/{project}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _SubmitBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    tool_outputs: list[models.ToolOutput] | None | UnsetType = UNSET
    tool_approvals: list[models.ToolApproval] | None | UnsetType = UNSET
    stream: bool | None | UnsetType = UNSET


_submit_decoder: Final = msgspec.json.Decoder(_SubmitBody)


class _Token(msgspec.Struct):
    token: str
    #: Unix time with sub-second precision (Entra's are whole seconds; tests rotate faster).
    expires_on: float


class _TokenCounts(msgspec.Struct):
    issued: int
    rejected: int


async def submit(request: web.Request) -> web.StreamResponse:
    """``submit_tool_outputs`` with Foundry's ``tool_approvals``."""
    try:
        body = _submit_decoder.decode(await request.read() or b"{}")
    except msgspec.ValidationError as exc:
        raise replies.validation_error(exc) from None
    except msgspec.DecodeError:
        raise replies.invalid_json() from None
    engine = request.app[gate.ENGINE]
    info = request.match_info
    rs = engine.run(info["thread_id"], info["run_id"])
    if isinstance(body.tool_approvals, list):
        decisions = foundry_rounds.check_approvals(rs, body.tool_approvals)

        def apply() -> None:
            foundry_rounds.submit_approvals(rs, time.time(), decisions)
    else:
        outputs_in = body.tool_outputs if isinstance(body.tool_outputs, list) else []
        outputs = engine.check_submit(rs, core.SubmitBody(tool_outputs=outputs_in))

        def apply() -> None:
            engine.submit(rs, outputs)

    if body.stream is not True or gate.AFTER_FAULT in request:
        apply()
        return replies.json_response(rs.run)
    frames: list[bytes] = []
    rs.sink = frames
    apply()
    return await sse.stream_run(request, engine, rs, frames)


async def issue_token(request: web.Request) -> web.StreamResponse:
    """A new token for Foundry requests (``foundry_token_ttl`` s; 1 h when unset)."""
    ttl = request.app[gate.ENGINE].settings.foundry_token_ttl or 3600.0
    token, expires = request.app[foundry_auth.TOKENS].issue(ttl)
    return replies.json_response(_Token(token=token, expires_on=expires))


async def token_counts(request: web.Request) -> web.StreamResponse:
    """How many tokens were issued and requests refused."""
    issuer = request.app[foundry_auth.TOKENS]
    return replies.json_response(_TokenCounts(issued=issuer.issued, rejected=issuer.rejected))


def install(app: web.Application, routes: Iterable[tuple[str, str, Handler]]) -> None:
    """Serve ``routes`` under the project path too, plus the token endpoints."""
    app[foundry_auth.TOKENS] = foundry_auth.TokenIssuer()
    for method, path, handler in routes:
        chosen = submit if path.endswith("/submit_tool_outputs") else handler
        app.router.add_route(method, _PROJECT + path, chosen)
    app.router.add_post(gate.INTERNAL_PREFIX + "token", issue_token)
    app.router.add_get(gate.INTERNAL_PREFIX + "tokens", token_counts)
