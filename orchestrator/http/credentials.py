"""Credentials: what goes into the auth header of every request, for every flavour.

The transport asks a ``TokenProvider`` for an ``AccessToken`` before each attempt, and once more
with ``refused=`` the token a 401 answered (then retries that request once). Implementations:

* ``StaticKey``: today's API key (``api-key`` header on Azure OpenAI, ``Bearer`` elsewhere).
* ``EnvToken``: a bearer token read from an environment variable, read again when refused.
* ``EntraToken``: any ``AsyncTokenCredential`` (``azure-identity``'s ``DefaultAzureCredential``
  by default, from the ``azure`` extra) for one scope, e.g. ``https://ai.azure.com/.default``.

``TokenCache`` gives the refreshing ones their manners: a token is refreshed ``margin`` seconds
ahead of its expiry, and concurrent requests wanting a fresh token share one refresh (500 runs
seeing a 401 together cause one fetch, not 500). Tokens live in ``config.Secret``: never in a
repr, a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal, Protocol

import anyio

from orchestrator import config, errors

__all__ = [
    "FOUNDRY_SCOPE",
    "AccessToken",
    "AsyncTokenCredential",
    "EntraToken",
    "EnvToken",
    "StaticKey",
    "TokenCache",
    "TokenProvider",
    "from_config",
]

log = logging.getLogger(__name__)

#: The scope of Azure AI Foundry Agent Service tokens.
FOUNDRY_SCOPE: Final = "https://ai.azure.com/.default"
#: Seconds before expiry at which a token is replaced.
DEFAULT_MARGIN: Final = 300.0


class AccessToken:
    """A token and when it stops working (Unix time; None: never, as far as we know)."""

    __slots__ = ("expires_on", "header", "secret")

    def __init__(
        self,
        secret: config.Secret,
        expires_on: float | None = None,
        *,
        header: Literal["bearer", "api-key"] = "bearer",
    ) -> None:
        self.secret = secret
        self.expires_on = expires_on
        #: How it is sent: ``Authorization: Bearer <token>`` or ``api-key: <token>``.
        self.header = header

    def __repr__(self) -> str:
        return f"AccessToken(secret={self.secret!r}, expires_on={self.expires_on!r})"

    def headers(self) -> dict[str, str]:
        """The header that carries it."""
        if self.header == "api-key":
            return {"api-key": self.secret.get()}
        return {"Authorization": "Bearer " + self.secret.get()}


class TokenProvider(Protocol):
    """Hands the transport a token for each request."""

    async def get_token(self, *, refused: AccessToken | None = None) -> AccessToken:
        """A usable token; ``refused``: the server answered 401 to that one, replace it
        (unless another request has already done so)."""
        ...


class AsyncTokenCredential(Protocol):
    """The part of ``azure.core.credentials_async.AsyncTokenCredential`` used here."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        """An object with ``token`` (str) and ``expires_on`` (Unix seconds)."""
        ...


class StaticKey:
    """One API key for the life of the process."""

    def __init__(self, key: config.Secret | str, *, header: Literal["bearer", "api-key"]) -> None:
        secret = config.Secret(key) if isinstance(key, str) else key
        self._token = AccessToken(secret, None, header=header)

    def __repr__(self) -> str:
        return "StaticKey(**********)"

    async def get_token(self, *, refused: AccessToken | None = None) -> AccessToken:
        return self._token


class TokenCache:
    """Single-flight, refresh-ahead cache over a coroutine that fetches a new token."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[AccessToken]],
        *,
        margin: float = DEFAULT_MARGIN,
        name: str = "token",
    ) -> None:
        self._fetch = fetch
        self._margin = margin
        self._name = name
        self._token: AccessToken | None = None
        self._lock = anyio.Lock()
        #: Fetches made (for metrics and tests).
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"TokenCache({self._name}, refreshes={self.refreshes})"

    def _fresh(self, token: AccessToken | None, refused: AccessToken | None) -> bool:
        if token is None or token is refused:
            return False
        return token.expires_on is None or token.expires_on - self._margin > time.time()

    async def get_token(self, *, refused: AccessToken | None = None) -> AccessToken:
        token = self._token
        if self._fresh(token, refused):
            assert token is not None
            return token
        async with self._lock:
            token = self._token  # another request may have refreshed while we waited
            if self._fresh(token, refused):
                assert token is not None
                return token
            token = await self._fetch()
            self.refreshes += 1
            self._token = token
        left = "never" if token.expires_on is None else f"{token.expires_on - time.time():.0f} s"
        log.info(
            "%s refreshed%s; expires in %s",
            self._name,
            " after a 401" if refused is not None else "",
            left,
            extra={"action": "token_refreshed"},
        )
        return token


class EnvToken:
    """A bearer token from an environment variable, read again whenever it is refused."""

    def __init__(
        self, variable: str, *, env: Mapping[str, str] | None = None, margin: float = 0.0
    ) -> None:
        self._variable = variable
        self._env = os.environ if env is None else env
        self._cache = TokenCache(self._read, margin=margin, name=f"token from ${variable}")

    def __repr__(self) -> str:
        return f"EnvToken({self._variable!r})"

    async def _read(self) -> AccessToken:
        value = self._env.get(self._variable, "")
        if not value:
            raise errors.ConfigError(f"{self._variable}: not set or empty (bearer token)")
        return AccessToken(config.Secret(value), None)

    async def get_token(self, *, refused: AccessToken | None = None) -> AccessToken:
        return await self._cache.get_token(refused=refused)


class EntraToken:
    """Microsoft Entra ID tokens for one scope from an ``AsyncTokenCredential``."""

    def __init__(
        self,
        credential: AsyncTokenCredential | None = None,
        *,
        scope: str = FOUNDRY_SCOPE,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        """``credential`` None: azure-identity's ``DefaultAzureCredential``, made on first use
        and closed by ``aclose`` (a credential passed in stays the caller's to close)."""
        self._credential = credential
        self._owned: Any = None
        self._scope = scope
        self.cache = TokenCache(self._fetch, margin=margin, name=f"Entra ID token for {scope}")

    def __repr__(self) -> str:
        return f"EntraToken(scope={self._scope!r})"

    async def _fetch(self) -> AccessToken:
        if self._credential is None:
            self._credential = self._owned = _default_azure_credential()
        try:
            got = await self._credential.get_token(self._scope)
        except errors.OrchestratorError:
            raise
        except Exception as exc:
            # azure-identity's messages name the sources it tried, never a token.
            raise errors.AuthenticationError(
                f"could not get an Entra ID token for {self._scope}: {type(exc).__name__}: {exc}",
                status=401,
            ) from exc
        return AccessToken(config.Secret(str(got.token)), float(got.expires_on))

    async def get_token(self, *, refused: AccessToken | None = None) -> AccessToken:
        return await self.cache.get_token(refused=refused)

    async def aclose(self) -> None:
        """Close the default credential if this provider made one."""
        owned, self._owned = self._owned, None
        if owned is not None:
            self._credential = None
            await owned.close()


def _default_azure_credential() -> AsyncTokenCredential:
    try:
        from azure.identity.aio import DefaultAzureCredential
    except ImportError as exc:
        raise errors.ConfigError(
            "api.credential 'entra' needs azure-identity: pip install 'run-orchestrator[azure]'"
        ) from exc
    credential: AsyncTokenCredential = DefaultAzureCredential()
    return credential


def from_config(
    api: config.ApiConfig, env: Mapping[str, str] | None = None
) -> TokenProvider | None:
    """The provider ``api.credential`` asks for (None: no key configured)."""
    env = os.environ if env is None else env
    kind = api.resolved_credential
    if kind == "entra":
        return EntraToken(scope=api.token_scope)
    if kind == "token":
        return EnvToken(api.api_key_env, env=env)
    value = env.get(api.api_key_env, "")
    if not value:
        return None
    return StaticKey(value, header="api-key" if api.flavor == "azure" else "bearer")
