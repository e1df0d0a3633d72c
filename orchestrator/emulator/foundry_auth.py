"""Foundry mode's gate: ``api-version`` required, and Entra-style bearer tokens that expire.

With ``foundry_token_ttl`` set, the only tokens accepted are those ``POST /_emulator/token``
issued, until they expire (the emulator plays Entra ID; rotation is the client's job). Unset,
any bearer token passes (or exactly ``require_api_key`` when that is set).
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Final

from aiohttp import web

from orchestrator.emulator import replies, settings

__all__ = ["PREFIX", "TOKENS", "TokenIssuer", "check"]

#: Where a Foundry project's endpoint lives: ``/api/projects/<project>``.
PREFIX: Final = "/api/projects/"
_UNAUTHORIZED: Final = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://ai.azure.com), or have expired."
)


class TokenIssuer:
    """Issues short-lived tokens and tells valid ones from expired or unknown ones."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        #: Tokens issued and requests refused for a bad token, for tests and stats.
        self.issued = 0
        self.rejected = 0

    def issue(self, ttl: float, now: float | None = None) -> tuple[str, float]:
        """A new token and its expiry (Unix time)."""
        now = time.time() if now is None else now
        self._expiry = {t: e for t, e in self._expiry.items() if e > now}  # forget old ones
        token = "emu." + secrets.token_urlsafe(24)
        expires = now + ttl
        self._expiry[token] = expires
        self.issued += 1
        return token, expires

    def valid(self, token: str, now: float | None = None) -> bool:
        """Issued here and not expired."""
        expires = self._expiry.get(token)
        return expires is not None and expires > (time.time() if now is None else now)


TOKENS: Final = web.AppKey("foundry_tokens", TokenIssuer)


def check(request: web.Request, s: settings.EmulatorSettings) -> None:
    """Refuse a Foundry request without ``api-version`` (400) or a good bearer token (401)."""
    if not request.query.get("api-version"):
        raise replies.ApiError(
            400,
            "Missing required query parameter: api-version",
            type=None,
            param="api-version",
            code="MissingApiVersionParameter",
        )
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.startswith("Bearer ") else ""
    issuer = request.app[TOKENS]
    if s.foundry_token_ttl is not None:
        ok = issuer.valid(token)
    elif s.require_api_key is not None:
        ok = hmac.compare_digest(token.encode(), s.require_api_key.get().encode())
    else:
        ok = bool(token)
    if not ok:
        issuer.rejected += 1
        raise replies.ApiError(401, _UNAUTHORIZED, type=None, code="401")
