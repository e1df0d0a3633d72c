"""One error hierarchy for the whole package.

::

    OrchestratorError
     ├── APIError                      the server answered with an error status
     │    ├── BadRequestError          400, 422
     │    ├── AuthenticationError      401
     │    ├── PermissionDeniedError    403
     │    ├── NotFoundError            404
     │    ├── ConflictError            409          (transient)
     │    ├── RateLimitError           429          (transient)
     │    ├── ServerError              408, >= 500  (transient)
     │    └── StreamError              an ``error`` event inside an SSE stream
     ├── APIConnectionError            no usable answer (transient)
     │    └── APITimeoutError
     ├── DecodeError                   a payload did not fit its struct
     ├── ConfigError                   config.yaml or environment is wrong
     ├── ToolDefinitionError           a @tool function cannot be registered
     ├── ToolFailure                   a tool failed with on_error = "raise"
     ├── RunError                      a run could not be driven to its end
     │    └── ThreadBusyError          the thread already has an active run
     └── StoreError                    the job store or ledger failed
          ├── LeaseLost                a fenced write came from a stale claim epoch
          ├── InvalidJob               a job spec was refused at enqueue (also a ValueError)
          └── AlreadyEnqueued          a queued job already holds the queueing lock

``TransientError`` is a marker mixed into the errors worth retrying; retry layers test for it
and nothing else.
"""

from __future__ import annotations

from orchestrator import scrub

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AlreadyEnqueued",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "DecodeError",
    "InvalidJob",
    "LeaseLost",
    "NotFoundError",
    "OrchestratorError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunError",
    "ServerError",
    "StoreError",
    "StreamError",
    "ThreadBusyError",
    "ToolDefinitionError",
    "ToolFailure",
    "TransientError",
    "api_error_for_status",
]


class OrchestratorError(Exception):
    """Base class of every error this package raises."""


class TransientError(OrchestratorError):
    """Marker: the same request may succeed if tried again later."""


class APIError(OrchestratorError):
    """The API answered with an error status; key-shaped text in its fields is redacted."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # The server's words end up in logs and the store: a key it quotes back must not.
        message = scrub.keys(scrub.surrogates(message))
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = _scrubbed(type)
        self.code = _scrubbed(code)
        self.param = _scrubbed(param)
        self.request_id = request_id
        #: Seconds the server asked us to wait, when it said so.
        self.retry_after = retry_after

    def __str__(self) -> str:
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"HTTP {self.status}: {self.message}{rid}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, type={self.type!r}, "
            f"code={self.code!r}, message={self.message!r}, request_id={self.request_id!r})"
        )


def _scrubbed(text: str | None) -> str | None:
    return None if text is None else scrub.keys(scrub.surrogates(text))


class BadRequestError(APIError):
    """400 or 422: the request was refused as invalid; retrying will not help."""


class AuthenticationError(APIError):
    """401: the key is missing, wrong or expired."""


class PermissionDeniedError(APIError):
    """403: the key may not do this."""


class NotFoundError(APIError):
    """404: no such thread, run, step or assistant."""


class ConflictError(APIError, TransientError):
    """409: a lock on the server timed out."""


class RateLimitError(APIError, TransientError):
    """429: slow down; ``retry_after`` says for how long when the server told us."""


class ServerError(APIError, TransientError):
    """408 or >= 500: the server failed or timed out."""


class StreamError(APIError):
    """The server sent an ``error`` event in an SSE stream (``status`` is the stream's own)."""


class APIConnectionError(TransientError):
    """The request got no usable answer: refused, reset, or dropped mid-way."""


class APITimeoutError(APIConnectionError):
    """The request took longer than its timeout."""


class DecodeError(OrchestratorError):
    """A payload was not valid JSON or did not fit its struct; the message names the path."""


class ConfigError(OrchestratorError):
    """The configuration is invalid; the message names the offending key."""


class ToolDefinitionError(OrchestratorError):
    """A function cannot be registered as a tool; the message names function and parameter."""


class ToolFailure(OrchestratorError):
    """A tool configured with ``on_error = "raise"`` failed; the run is to be cancelled."""

    def __init__(self, message: str, *, tool_call_id: str, tool_name: str) -> None:
        super().__init__(message)
        self.tool_call_id = tool_call_id
        self.tool_name = tool_name


class RunError(OrchestratorError):
    """A run could not be driven to a terminal state."""


class ThreadBusyError(RunError):
    """The thread already has an active run and ``if_active`` is ``"error"``."""

    def __init__(self, message: str, *, thread_id: str, run_id: str | None) -> None:
        super().__init__(message)
        self.thread_id = thread_id
        self.run_id = run_id


class StoreError(OrchestratorError):
    """The job store or ledger failed (unreadable file, locked database, lost lease)."""


class LeaseLost(StoreError):
    """The job's claim epoch moved on (or the job ended): the caller no longer owns it."""

    def __init__(self, message: str, *, job_id: str, epoch: int) -> None:
        super().__init__(message)
        self.job_id = job_id
        #: The stale epoch the caller presented.
        self.epoch = epoch


class InvalidJob(StoreError, ValueError):
    """A job spec is malformed; it was refused at enqueue and nothing was stored."""


class AlreadyEnqueued(StoreError):
    """A queued job already holds this ``queueing_lock``; nothing was enqueued."""

    def __init__(self, message: str, *, queueing_lock: str, job_id: str | None) -> None:
        super().__init__(message)
        self.queueing_lock = queueing_lock
        #: The queued job holding the lock, when the store can tell.
        self.job_id = job_id


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: ServerError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``[exc]``."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def deciding(exc: Exception) -> Exception:
    """The one error that decides what happens next when several were raised at once
    (parallel tool calls): a lost lease first (nothing we write counts any more), then a
    permanent error, then a transient one."""
    found = [e for e in leaves(exc) if isinstance(e, Exception)] or [exc]
    lost = [e for e in found if isinstance(e, LeaseLost)]
    permanent = [e for e in found if not isinstance(e, TransientError | StoreError)]
    return (lost or permanent or found)[0]


def api_error_for_status(status: int) -> type[APIError]:
    """The APIError subclass for an HTTP status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)
