"""Reading request bodies: whatever a client sends, the answer is an API error, never a 500.

Every route that takes a body goes through ``decode``: a body over ``MAX_BODY_BYTES`` is a 413
that says so, a body that stops arriving for ``body_timeout`` seconds is a 408, and bytes that
are not JSON (nested too deeply, invalid UTF-8, truncated) are the API's 400 for unparsable JSON.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

import anyio
import msgspec
from aiohttp import web

from orchestrator.emulator import replies

__all__ = ["MAX_BODY_BYTES", "decode", "read", "too_large"]

T = TypeVar("T")

#: Largest request body accepted (aiohttp's ``client_max_size``).
MAX_BODY_BYTES: Final = 8 * 1024 * 1024

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def too_large(limit: int = MAX_BODY_BYTES) -> replies.ApiError:
    """413 for a body over the limit."""
    return replies.ApiError(
        413,
        f"Request body too large: the limit is {limit} bytes ({limit // (1024 * 1024)} MiB).",
        code="request_too_large",
    )


async def read(request: web.Request, within: float) -> bytes:
    """The whole body, within ``within`` seconds and ``MAX_BODY_BYTES``."""
    try:
        with anyio.fail_after(within):
            return await request.read()
    except TimeoutError:
        raise replies.ApiError(
            408,
            f"Timed out reading the request body (no complete body within {within:g} s).",
            code="request_timeout",
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise too_large() from None


def decode(raw: bytes, type_: type[T]) -> T:
    """``raw`` (empty: ``{}``) decoded as ``type_``; the API's 400s for what does not fit."""
    dec = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return dec.decode(raw or b"{}")  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise replies.validation_error(exc) from None
    # RecursionError: nested too deeply; UnicodeDecodeError: invalid UTF-8 in a string.
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise replies.invalid_json() from None
