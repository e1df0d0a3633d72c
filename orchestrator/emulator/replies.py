"""JSON responses and the API's error bodies, with the messages the real service uses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

from orchestrator.protocols.assistants import models

__all__ = [
    "ApiError",
    "invalid_json",
    "json_response",
    "not_found",
    "validation_error",
]

_encoder: Final = msgspec.json.Encoder()
_JSON_HEADERS: Final = {"Content-Type": "application/json"}


def json_response(
    payload: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``payload`` (a struct) as an ``application/json`` response."""
    hdrs = {**_JSON_HEADERS, **headers} if headers else _JSON_HEADERS
    return web.Response(body=_encoder.encode(payload), status=status, headers=hdrs)


class ApiError(Exception):
    """An error the API answers with; the middleware renders it as ``{"error": {...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = models.ErrorResponse(
            error=models.ErrorBody(message=message, type=type, param=param, code=code)
        )
        self.headers = headers

    def response(self) -> web.Response:
        """The HTTP response for this error."""
        return json_response(self.body, status=self.status, headers=self.headers)


def not_found(kind: str, ident: str) -> ApiError:
    """404 for an unknown id."""
    return ApiError(404, f"No {kind} found with id '{ident}'.")


def invalid_json() -> ApiError:
    """400 for a body that is not JSON."""
    return ApiError(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
        "sent was not valid JSON.)",
    )


# The assistants endpoints validate bodies with pydantic v1 and say so in the message, e.g.
# "1 validation error for Request\nbody -> tool_outputs -> 0 -> output\n  str type expected
# (type=type_error.str)" (see WIRE.md 4.1). msgspec's messages are translated to that form.
_UNKNOWN: Final = re.compile(r"Object contains unknown field `([^`]*)`")
_MISSING: Final = re.compile(r"Object missing required field `([^`]*)`")
_TYPE: Final = re.compile(r"Expected `([^`|]*)[^`]*`, got `([^`]*)`")
_AT: Final = re.compile(r" - at `\$([^`]*)`$")
_PYDANTIC_TYPES: Final = {
    "str": "str type expected (type=type_error.str)",
    "int": "value is not a valid integer (type=type_error.integer)",
    "float": "value is not a valid float (type=type_error.float)",
    "bool": "value could not be parsed to a boolean (type=type_error.bool)",
    "object": "value is not a valid dict (type=type_error.dict)",
    "array": "value is not a valid list (type=type_error.list)",
}


def validation_error(exc: msgspec.ValidationError) -> ApiError:
    """400 for a body that is JSON but does not fit the request struct."""
    text = str(exc)
    at = _AT.search(text)
    path = at.group(1) if at else ""
    parts = ["body", *(p for p in re.split(r"[.\[\]]+", path) if p)]
    if m := _UNKNOWN.search(text):
        parts.append(m.group(1))
        detail = "extra fields not permitted (type=value_error.extra)"
    elif m := _MISSING.search(text):
        parts.append(m.group(1))
        detail = "field required (type=value_error.missing)"
    elif m := _TYPE.search(text):
        detail = _PYDANTIC_TYPES.get(m.group(1).strip(), f"{m.group(1)} expected (type=type_error)")
    else:
        detail = f"{_AT.sub('', text)} (type=value_error)"
    location = " -> ".join(parts)
    return ApiError(400, f"1 validation error for Request\n{location}\n  {detail}")
