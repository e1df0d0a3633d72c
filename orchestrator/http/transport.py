"""HTTP plumbing under ``AssistantsClient``: URLs and auth per flavour, one attempt, retries,
error answers, and the translation of aiohttp exceptions (none escapes this layer's callers).
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, Literal, Protocol, TypeVar

import aiohttp
import anyio
import msgspec

from orchestrator import codec, config, errors
from orchestrator.http import credentials, ratelimit, retrying

__all__ = [
    "OPENAI_BASE_URL",
    "Query",
    "RequestObserver",
    "Response",
    "Transport",
    "api_error",
    "connection_error",
    "decode_body",
    "excerpt",
    "list_query",
    "segment",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
_EXCERPT_CHARS: Final = 200

#: Query parameters in order; a key may repeat (``include[]``).
Query = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Response(Generic[T]):
    """A decoded body plus the response headers the driver needs."""

    data: T
    status: int
    #: ``x-request-id``, for support tickets and logs.
    request_id: str | None
    #: ``openai-poll-after-ms``: the server's hint for the next poll; None when absent.
    poll_after_ms: int | None


class RequestObserver(Protocol):
    """Receives request metrics; an implementation may leave either method empty."""

    def request_finished(self, endpoint: str, status: int | None, seconds: float) -> None:
        """One HTTP attempt ended (``status`` None: no answer); for streams, when headers came."""
        ...

    def request_retried(self, endpoint: str, attempt: int, error: BaseException) -> None:
        """Attempt number ``attempt`` failed with ``error`` and will be tried again."""
        ...


def segment(value: str) -> str:
    """An id as one URL path segment: nothing in it can reach another path."""
    return urllib.parse.quote(value, safe="")


def list_query(
    *,
    limit: int | None = None,
    order: str | None = None,
    after: str | None = None,
    before: str | None = None,
    include: Sequence[str] = (),
    **extra: str | None,
) -> list[tuple[str, str]]:
    """Query pairs for a list endpoint: unset values left out, ``include[]`` repeated."""
    pairs = [("limit", str(limit) if limit is not None else None)]
    pairs += [("order", order), ("after", after), ("before", before), *extra.items()]
    return [(k, v) for k, v in pairs if v is not None] + [("include[]", i) for i in include]


def _poll_after_ms(headers: Mapping[str, str]) -> int | None:
    text = headers.get("openai-poll-after-ms")
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def excerpt(payload: bytes) -> str:
    """The start of a body as one short line of text."""
    text = " ".join(payload[: _EXCERPT_CHARS * 8].decode("utf-8", "replace").split())
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"


def _error_body(payload: bytes) -> codec.ErrorBody | None:
    """The error object of an error answer; None when the body holds none we can read."""
    try:
        body = codec.decoder(codec.ErrorResponse).decode(payload).error
    except codec.DECODE_FAILURES:
        try:  # some servers send the bare Error object
            body = codec.decoder(codec.ErrorBody).decode(payload)
        except codec.DECODE_FAILURES:
            return None
    return body if body.message else None


def decode_body(
    payload: bytes, type_: type[T], *, endpoint: str, request_id: str | None = None
) -> T:
    """A 2xx body decoded into ``type_``; ``DecodeError`` (its cause the decoder's own error)
    for any body that does not decode, however hostile."""
    try:
        return codec.decoder(type_).decode(payload)
    except codec.DECODE_FAILURES as exc:
        rid = f" (request {request_id})" if request_id else ""
        why = codec.describe(exc)
        raise errors.DecodeError(f"{endpoint}{rid}: {type_.__name__}: {why}") from exc


def api_error(status: int, headers: Mapping[str, str], payload: bytes) -> errors.APIError:
    """The ``APIError`` subclass for an error answer, whatever its body looks like."""
    body = _error_body(payload)
    if body is not None:
        message, type_, code, param = body.message, body.type, body.code, body.param
    else:
        content_type = headers.get("content-type", "no content type").split(";")[0]
        snippet = excerpt(payload)
        message = f"non-JSON error body ({content_type}): {snippet}" if snippet else "empty body"
        type_ = code = param = None
    return errors.api_error_for_status(status)(
        message,
        status=status,
        type=type_,
        code=code,
        param=param,
        request_id=headers.get("x-request-id"),
        retry_after=retrying.parse_retry_after(headers),
    )


def connection_error(endpoint: str, exc: BaseException) -> errors.APIConnectionError:
    """Translate an aiohttp or socket failure (the caller chains ``exc`` as the cause)."""
    if isinstance(exc, TimeoutError):
        return errors.APITimeoutError(f"{endpoint}: timed out ({type(exc).__name__})")
    detail = re.sub(r"\s+", " ", str(exc))[:_EXCERPT_CHARS]
    return errors.APIConnectionError(f"{endpoint}: {type(exc).__name__}: {detail}".rstrip(": "))


#: aiohttp failures worth another attempt (a malformed URL, say, is not).
_TRANSIENT: Final = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


class Transport:
    """Sends requests for one client: headers, URLs, limiter, retries, errors, metrics."""

    def __init__(
        self,
        api: config.ApiConfig,
        retry: config.RetryConfig,
        *,
        credential: credentials.TokenProvider | None = None,
        api_key: config.Secret | None = None,
        limiter: ratelimit.RateLimiter | None,
        observer: RequestObserver | None,
    ) -> None:
        """``credential`` authenticates every request; ``api_key`` is short for a
        ``credentials.StaticKey`` (the ``api-key`` header on Azure OpenAI, else ``Bearer``)."""
        if credential is None and api_key:
            header: Literal["bearer", "api-key"] = "api-key" if api.flavor == "azure" else "bearer"
            credential = credentials.StaticKey(api_key, header=header)
        if api.flavor in ("azure", "foundry"):
            if not api.base_url:
                raise errors.ConfigError(
                    f"api.base_url: required when api.flavor is {api.flavor!r}"
                )
            suffix = "/openai" if api.flavor == "azure" else ""
            self.base_url = api.base_url.rstrip("/") + suffix
            self._query: tuple[tuple[str, str], ...] = (("api-version", api.api_version or ""),)
        else:
            self.base_url = (api.base_url or OPENAI_BASE_URL).rstrip("/")
            self._query = ()
        self.flavor = api.flavor
        self._credential = credential
        headers = {"Accept": "application/json"}
        if api.flavor != "foundry":
            headers["OpenAI-Beta"] = "assistants=v2"
        if api.flavor == "openai":
            if api.organization:
                headers["OpenAI-Organization"] = api.organization
            if api.project:
                headers["OpenAI-Project"] = api.project
        self._headers: Final = headers
        self._timeout: Final = aiohttp.ClientTimeout(
            total=api.timeout, sock_connect=api.connect_timeout
        )
        # A stream may run for minutes: only the silence between chunks is bounded.
        self._stream_timeout: Final = aiohttp.ClientTimeout(
            total=None, sock_connect=api.connect_timeout, sock_read=api.timeout
        )
        self._policy = retrying.RetryPolicy(retry)
        self._limiter = limiter
        # Requests past the connection pool's size wait here, holding a few frames, rather
        # than inside aiohttp holding a built request each (10,000 runs polling at once).
        self._slots = anyio.Semaphore(api.max_connections, fast_acquire=True)
        self._on_finished = getattr(observer, "request_finished", None)
        self._on_retried = getattr(observer, "request_retried", None)
        self._max_connections = api.max_connections
        self.session: aiohttp.ClientSession | None = None
        #: ``open_session`` made ``session`` (so ``close_session`` closes it).
        self._own_session = False

    async def open_session(self, owner: str) -> None:
        """Open a session of our own, sized by ``api.max_connections``, unless the caller
        gave one (``session`` set before: it stays the caller's, never closed here)."""
        if self._own_session:
            raise RuntimeError(f"{owner} is already open")
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self.session = aiohttp.ClientSession(connector=connector)
            self._own_session = True

    async def close_session(self) -> None:
        """Close the session ``open_session`` made (shielded: a cancelled caller still does)."""
        session, own = self.session, self._own_session
        if own and session is not None:
            self.session, self._own_session = None, False
            with anyio.CancelScope(shield=True):
                await session.close()

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r}, flavor={self.flavor!r})"

    def _request_headers(
        self, token: credentials.AccessToken | None, *, body: bool, stream: bool
    ) -> dict[str, str]:
        headers = dict(self._headers)
        if token is not None:
            headers.update(token.headers())
        if body:
            headers["Content-Type"] = "application/json"
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    def _finished(self, endpoint: str, status: int | None, started: float) -> None:
        if self._on_finished is not None:
            try:
                self._on_finished(endpoint, status, time.perf_counter() - started)
            except Exception:
                log.exception("request observer failed", extra={"endpoint": endpoint})

    def _retried(self, endpoint: str) -> retrying.OnRetry:
        def on_retry(attempt: int, error: errors.OrchestratorError, delay: float) -> None:
            log.info(
                "%s: attempt %d failed (%s); retrying in %.3f s",
                endpoint,
                attempt,
                type(error).__name__,
                delay,
                extra={
                    "endpoint": endpoint,
                    "attempt": attempt,
                    "delay": delay,
                    "error": str(error),
                    "request_id": getattr(error, "request_id", None),
                },
            )
            if self._on_retried is not None:
                try:
                    self._on_retried(endpoint, attempt, error)
                except Exception:
                    log.exception("request observer failed", extra={"endpoint": endpoint})

        return on_retry

    async def _attempt(
        self,
        endpoint: str,
        method: str,
        path: str,
        query: Query,
        body: bytes | None,
        *,
        stream: bool,
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """One attempt: the 2xx response (body read unless streaming) or a raised error."""
        if self.session is None:
            raise RuntimeError("AssistantsClient is not open: use `async with AssistantsClient()`")
        started = time.perf_counter()
        token = await self._credential.get_token() if self._credential is not None else None
        resp = await self._send(
            endpoint, method, path, query=query, body=body, token=token, stream=stream
        )
        if resp.status == 401 and self._credential is not None:
            # Expired or revoked under us: one retry with a new token (one refresh for all
            # the requests refused together); a 401 refuses the request, so resending is safe.
            fresh = await self._credential.get_token(refused=token)
            if fresh is not token:
                resp.release()
                log.info("%s: 401; retrying with a refreshed token", endpoint)
                resp = await self._send(
                    endpoint, method, path, query=query, body=body, token=fresh, stream=stream
                )
        if 200 <= resp.status < 300 and stream:
            self._finished(endpoint, resp.status, started)
            return resp, b""
        try:
            payload = await resp.read()
        except _TRANSIENT as exc:
            self._finished(endpoint, None, started)
            raise _retryable(endpoint, exc) from None
        finally:
            resp.release()
        self._finished(endpoint, resp.status, started)
        if 200 <= resp.status < 300:
            return resp, payload
        error = api_error(resp.status, resp.headers, payload)
        raise self._policy.judge(error, resp.headers)

    async def _send(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        query: Query,
        body: bytes | None,
        token: credentials.AccessToken | None,
        stream: bool,
    ) -> aiohttp.ClientResponse:
        """One HTTP exchange up to the response headers."""
        assert self.session is not None
        if self._limiter is not None:
            await self._limiter.acquire()
        started = time.perf_counter()
        try:
            return await self.session.request(
                method,
                self.base_url + path,
                params=[*self._query, *query],
                data=body,
                headers=self._request_headers(token, body=body is not None, stream=stream),
                timeout=self._stream_timeout if stream else self._timeout,
                allow_redirects=False,  # a redirect must not carry the key elsewhere
            )
        except _TRANSIENT as exc:
            self._finished(endpoint, None, started)
            raise _retryable(endpoint, exc) from None
        except aiohttp.ClientError as exc:
            self._finished(endpoint, None, started)
            raise connection_error(endpoint, exc) from exc

    async def request(
        self,
        endpoint: str,
        method: str,
        path: str,
        type_: type[T],
        *,
        query: Query = (),
        body: bytes | None = None,
        retry: bool = True,
    ) -> Response[T]:
        """Send a request with retries and decode its JSON answer into ``type_``.

        ``retry=False`` makes one attempt, for requests that must not be repeated blindly
        (creates, submits): a failure worth retrying raises ``retrying.Retryable`` for the
        caller's own policy, which first finds out whether the attempt took effect.
        """

        async def attempt(n: int) -> Response[T]:
            async with self._slots:
                resp, payload = await self._attempt(
                    endpoint, method, path, query, body, stream=False
                )
            request_id = resp.headers.get("x-request-id")
            try:
                data = decode_body(payload, type_, endpoint=endpoint, request_id=request_id)
            except errors.DecodeError as error:
                cause = error.__cause__
                cut_short = isinstance(cause, msgspec.DecodeError) and not isinstance(
                    cause, msgspec.ValidationError
                )
                if method == "GET" and cut_short:
                    # A body cut short on the way is worth reading again; a POST is not
                    # repeated for it (the server has acted on it), nor a body of the wrong
                    # shape, nesting or encoding (it would come back the same).
                    raise retrying.Retryable(error) from cause
                raise
            return Response(data, resp.status, request_id, _poll_after_ms(resp.headers))

        if not retry:
            return await attempt(1)
        return await self._policy.call(attempt, self._retried(endpoint))

    async def open_stream(
        self,
        endpoint: str,
        path: str,
        body: bytes | None,
        *,
        retry: bool = True,
        method: str = "POST",
        query: Query = (),
    ) -> aiohttp.ClientResponse:
        """Send with retries until a 2xx answer arrives; its body is left for the caller to
        read (and release). ``retry=False``: one attempt, as for ``request``. ``method="GET"``
        with ``query`` re-opens a stream (Responses' ``starting_after``)."""

        async def attempt(n: int) -> tuple[aiohttp.ClientResponse, bytes]:
            return await self._attempt(endpoint, method, path, query, body, stream=True)

        if not retry:
            resp, _ = await attempt(1)
            return resp
        resp, _ = await self._policy.call(attempt, self._retried(endpoint))
        return resp


def _retryable(endpoint: str, exc: BaseException) -> retrying.Retryable:
    error = connection_error(endpoint, exc)
    error.__cause__ = exc
    return retrying.Retryable(error)
