"""JSON on the wire, for every protocol: shared msgspec decoders, decode failures mapped to
``errors.DecodeError`` (naming the path, never echoing the bytes), and the API's error object
(``{"error": {...}}``), which OpenAI, Azure and Foundry send alike for both protocols."""

from __future__ import annotations

from typing import Any, Final, TypeVar

import msgspec
from msgspec import Struct

from orchestrator import errors

__all__ = [
    "DECODE_FAILURES",
    "ErrorBody",
    "ErrorResponse",
    "decode",
    "decoder",
    "describe",
    "encode",
    "raw_json",
]


class ErrorBody(Struct, gc=False):
    """The API's error object."""

    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | None = None


class ErrorResponse(Struct, gc=False):
    """``{"error": {...}}``."""

    error: ErrorBody


S = TypeVar("S")

#: What decoding hostile bytes can raise besides ``msgspec.DecodeError`` (a ``ValueError``):
#: ``RecursionError`` for nesting too deep (even inside skipped or ``Raw`` fields) and
#: ``UnicodeDecodeError`` (a ``ValueError``) for invalid UTF-8 inside a string.
DECODE_FAILURES: Final = (ValueError, RecursionError)

_encoder: Final = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def raw_json(value: Any) -> msgspec.Raw:
    """``value`` as raw JSON, for a ``msgspec.Raw`` field such as ``Run.tools_json``."""
    return msgspec.Raw(_encoder.encode(value))


def decoder(type_: type[S]) -> msgspec.json.Decoder[S]:
    """The shared decoder for a type, built once."""
    dec = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.json.Decoder(type_)
    return dec


def decode(data: bytes | str, type_: type[S]) -> S:
    """Decode JSON into ``type_``; any bad payload raises ``DecodeError`` naming the path."""
    try:
        return decoder(type_).decode(data)
    except DECODE_FAILURES as exc:
        raise errors.DecodeError(f"{type_.__name__}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """One line on why bytes did not decode (one of ``DECODE_FAILURES``), without the bytes."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, UnicodeError):
        return "the JSON text is not valid UTF-8"
    return str(exc)


def encode(obj: Any) -> bytes:
    """Encode a struct (or plain data) to wire JSON."""
    return _encoder.encode(obj)
