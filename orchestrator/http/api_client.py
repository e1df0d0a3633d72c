"""What every protocol's client shares: the settings, the key or credential, the rate limiter,
one ``Transport``, and the aiohttp session it owns inside ``async with`` (a ``session``
passed in stays the caller's; its connector sets the connection limit)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import aiohttp
import anyio
import msgspec

from orchestrator import config
from orchestrator.http import credentials, ratelimit, transport

__all__ = ["ApiClient"]


class ApiClient:
    """The base of ``AssistantsClient`` and ``ResponsesClient``.

    ``limiter`` replaces the token bucket built from ``api.max_requests_per_second`` (to share
    one bucket between clients, say); ``base_url`` is a shortcut over ``api.base_url``;
    ``credential`` (Entra ID, bearer tokens...) replaces ``api_key`` when given.
    """

    def __init__(
        self,
        api: config.ApiConfig | None = None,
        retry: config.RetryConfig | None = None,
        *,
        base_url: str | None = None,
        api_key: config.Secret | str | None = None,
        session: aiohttp.ClientSession | None = None,
        observer: transport.RequestObserver | None = None,
        limiter: ratelimit.RateLimiter | None = None,
        credential: credentials.TokenProvider | None = None,
    ) -> None:
        self._api = api if api is not None else config.ApiConfig()
        if base_url is not None:
            self._api = msgspec.structs.replace(self._api, base_url=base_url)
        key = config.check_key(api_key, "api_key") if isinstance(api_key, str) else api_key
        rps = self._api.max_requests_per_second
        if limiter is None and rps is not None:
            limiter = ratelimit.TokenBucket(rps)
        self._retry = retry if retry is not None else config.RetryConfig()
        self._transport = transport.Transport(
            self._api,
            self._retry,
            credential=credential,
            api_key=key or None,
            limiter=limiter,
            observer=observer,
        )
        self._transport.session = session
        self._credential = credential

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(base_url={self.base_url!r}, flavor={self._api.flavor!r})"

    @property
    def base_url(self) -> str:
        """The root every endpoint path is appended to (``.../openai`` on Azure)."""
        return self._transport.base_url

    async def __aenter__(self) -> Self:
        await self._transport.open_session(type(self).__name__)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._transport.close_session()
        # A provider that opened something of its own (Entra's default credential) closes it.
        close = getattr(self._credential, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
