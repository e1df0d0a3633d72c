"""config.yaml → typed, validated, frozen settings.

Every section is a msgspec Struct that forbids unknown keys, so a typo is named instead of
ignored. ``ORCHESTRATOR_<SECTION>__<KEY>`` environment variables override single keys. The API
key is never read from the file: ``api.api_key_env`` names the variable that holds it.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import yaml

from orchestrator import errors

__all__ = [
    "AllowRule",
    "ApiConfig",
    "ApprovalsConfig",
    "Config",
    "LoggingConfig",
    "PollConfig",
    "RetryConfig",
    "RunConfig",
    "Secret",
    "ToolsConfig",
    "WorkerConfig",
    "find",
    "load",
    "loads",
]

ENV_PREFIX: Final = "ORCHESTRATOR_"
#: The variable naming the config file (not a key override).
CONFIG_ENV: Final = "ORCHESTRATOR_CONFIG"
#: The file loaded from the working directory when neither ``--config`` nor the variable is set.
DEFAULT_FILE: Final = "config.yaml"


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def _positive(value: float, key: str) -> None:
    # `not value > 0` also rejects NaN, which passes every `<=` comparison.
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise errors.ConfigError(f"{key}: must be > 0, got {value!r}")


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    def _check_numbers(self, section: str) -> None:
        """Every number of the section is finite (NaN and infinities are never meant)."""
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise errors.ConfigError(f"{section}.{name}: must be a finite number, got {value}")


class ApiConfig(_Section, frozen=True):
    """Where the Assistants API is and how to talk to it."""

    #: Base URL ending in ``/v1`` (OpenAI), the resource endpoint (Azure OpenAI) or the project
    #: endpoint ``https://<resource>.services.ai.azure.com/api/projects/<project>`` (Foundry).
    #: None: OpenAI's, or the bundled emulator when no API key is set either.
    base_url: str | None = None
    #: Environment variable holding the API key (or, with ``credential: token``, a bearer token).
    api_key_env: str = "OPENAI_API_KEY"
    #: ``foundry``: Azure AI Foundry Agent Service (classic agents, threads/runs).
    flavor: Literal["openai", "azure", "foundry"] = "openai"
    #: ``api-version`` query parameter (Azure OpenAI: required; Foundry: default ``v1``).
    api_version: str | None = None
    #: How requests authenticate: ``key`` (the API key), ``token`` (a bearer token from
    #: ``api_key_env``, re-read when refused), ``entra`` (Microsoft Entra ID through
    #: azure-identity's DefaultAzureCredential: ``az login``, managed identity...), ``auto``
    #: (``entra`` for Foundry, else ``key``).
    credential: Literal["auto", "key", "token", "entra"] = "auto"
    #: Scope of Entra ID tokens.
    token_scope: str = "https://ai.azure.com/.default"
    organization: str | None = None
    project: str | None = None
    #: Seconds for one whole request (not for a stream, which only has the read timeout).
    timeout: float = 60.0
    connect_timeout: float = 10.0
    #: Concurrent connections (and so concurrent requests) of one client.
    max_connections: int = 100
    #: Requests per second across all runs of one client; None for no cap.
    max_requests_per_second: float | None = None

    def __post_init__(self) -> None:
        self._check_numbers("api")
        _positive(self.timeout, "api.timeout")
        _positive(self.connect_timeout, "api.connect_timeout")
        _positive(self.max_connections, "api.max_connections")
        if self.max_requests_per_second is not None:
            _positive(self.max_requests_per_second, "api.max_requests_per_second")
        if self.flavor == "azure" and not self.api_version:
            raise errors.ConfigError("api.api_version: required when api.flavor is 'azure'")
        if self.flavor == "azure" and (self.base_url or "").rstrip("/").endswith("/v1"):
            raise errors.ConfigError(
                f"api.base_url: {self.base_url!r} ends in /v1, which is OpenAI's form; Azure wants "
                "the resource endpoint, e.g. https://RESOURCE.openai.azure.com"
            )
        if self.flavor == "foundry" and self.api_version is None:
            msgspec.structs.force_setattr(self, "api_version", "v1")

    @property
    def resolved_credential(self) -> Literal["key", "token", "entra"]:
        """``credential`` with ``auto`` decided by the flavour."""
        if self.credential != "auto":
            return self.credential
        return "entra" if self.flavor == "foundry" else "key"


class RetryConfig(_Section, frozen=True):
    """Retries of single HTTP requests (408, 409, 429, 5xx, connection errors, timeouts)."""

    #: Attempts in all, the first included.
    attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    #: A server asking to wait longer than this fails the request at once.
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        self._check_numbers("retry")
        _positive(self.attempts, "retry.attempts")
        _positive(self.initial_backoff, "retry.initial_backoff")
        _positive(self.max_backoff, "retry.max_backoff")
        _positive(self.max_retry_after, "retry.max_retry_after")


class PollConfig(_Section, frozen=True):
    """How a run is watched."""

    #: ``poll`` retrieves the run; ``stream`` follows SSE; ``auto`` streams unless refused.
    mode: Literal["poll", "stream", "auto"] = "poll"
    #: Seconds between polls right after create or submit.
    initial_interval: float = 0.25
    #: Back-off ceiling while the run does not change.
    max_interval: float = 5.0
    multiplier: float = 1.5
    #: Fraction of random spread on each interval.
    jitter: float = 0.1
    #: Honour the server's ``openai-poll-after-ms`` header.
    honour_server_hint: bool = True
    #: Poll mode: list the run's steps when it pauses or ends, to report ``StepCompleted``
    #: events as stream mode does (one more request each time).
    fetch_steps: bool = False

    def __post_init__(self) -> None:
        self._check_numbers("poll")
        _positive(self.initial_interval, "poll.initial_interval")
        _positive(self.max_interval, "poll.max_interval")
        if self.multiplier < 1:
            raise errors.ConfigError("poll.multiplier: must be >= 1")
        if not 0 <= self.jitter < 1:
            raise errors.ConfigError("poll.jitter: must be in [0, 1)")
        if self.max_interval < self.initial_interval:
            raise errors.ConfigError("poll.max_interval: must be >= poll.initial_interval")


class RunConfig(_Section, frozen=True):
    """Policies for driving one run."""

    #: Seconds after which an unfinished run is cancelled; None: only ``expires_at`` bounds it.
    run_timeout: float | None = None
    #: What to do when the thread already has an active run.
    if_active: Literal["wait", "cancel", "error"] = "wait"
    #: Seconds the driver waits for a cancel to land (shielded).
    cancel_timeout: float = 10.0
    #: Re-create a run that failed with one of these ``last_error.code`` values.
    retry_failed_codes: tuple[str, ...] = ()
    retry_failed_attempts: int = 0
    retry_failed_backoff: float = 2.0

    def __post_init__(self) -> None:
        self._check_numbers("run")
        if self.run_timeout is not None:
            _positive(self.run_timeout, "run.run_timeout")
        _positive(self.cancel_timeout, "run.cancel_timeout")
        if self.retry_failed_attempts < 0:
            raise errors.ConfigError("run.retry_failed_attempts: must be >= 0")


class ToolsConfig(_Section, frozen=True):
    """How tool calls are answered."""

    #: Modules imported at start-up (the working directory is on the import path); their
    #: ``@tool`` functions register themselves.
    modules: tuple[str, ...] = ()
    #: Before a run starts, the assistant's (or the run's) function tools missing from the
    #: registry: ``warn`` logs them by name, ``error`` refuses the run, ``off`` skips the check.
    check_tools: Literal["warn", "error", "off"] = "warn"
    #: Seconds one tool call may take (a tool's own ``timeout`` wins).
    timeout: float = 60.0
    #: ``output``: a failure becomes an error output for the model; ``raise``: cancel the run.
    on_error: Literal["output", "raise"] = "output"
    #: Longer outputs are cut, with a visible marker.
    max_output_chars: int = 32_768
    #: Tool calls running at once (threads for sync tools included).
    concurrency: int = 16
    #: Put the traceback into error outputs (off: type and message only).
    include_traceback: bool = False
    #: Seconds kept free before ``expires_at`` for the submit itself.
    deadline_margin: float = 5.0
    #: Timed-out sync tool threads (which run on, holding their slot) allowed at once in the
    #: process; past it a sync call is refused with an ``unavailable`` error output.
    max_abandoned_threads: int = 32

    def __post_init__(self) -> None:
        self._check_numbers("tools")
        _positive(self.timeout, "tools.timeout")
        _positive(self.max_output_chars, "tools.max_output_chars")
        _positive(self.concurrency, "tools.concurrency")
        _positive(self.max_abandoned_threads, "tools.max_abandoned_threads")
        for module in self.modules:
            if not isinstance(module, str) or not all(
                part.isidentifier() for part in module.split(".")
            ):
                raise errors.ConfigError(
                    f"tools.modules: {module!r} is not a module name (e.g. mytools or pkg.tools)"
                )


class AllowRule(_Section, frozen=True):
    """MCP tools of one server that may run without asking."""

    server_label: str
    #: Tool names allowed; ``"*"`` allows every tool of the server.
    tools: tuple[str, ...] = ("*",)


class ApprovalsConfig(_Section, frozen=True):
    """Foundry's MCP tool approvals (``required_action.type: submit_tool_approval``)."""

    #: ``policy``: allow what ``allow`` lists, deny the rest; ``wait``: a call the policy does
    #: not allow parks the worker's job as ``waiting_approval`` until ``orchestrator approve``.
    mode: Literal["policy", "wait"] = "policy"
    allow: tuple[AllowRule, ...] = ()


class WorkerConfig(_Section, frozen=True):
    """The long-running worker."""

    store: Literal["sqlite", "postgres", "memory"] = "sqlite"
    sqlite_path: str = "orchestrator.sqlite3"
    #: libpq connection string or URL of the PostgreSQL store. Keep the password out of it
    #: (``PGPASSWORD`` or ``~/.pgpass``); ``ORCHESTRATOR_WORKER__POSTGRES_DSN`` overrides it.
    postgres_dsn: str | None = None
    #: Connections per worker process (None: ``concurrency + 2``, at most 20).
    postgres_pool_size: int | None = None
    #: Seconds to wait for a PostgreSQL connection, at start and for each call.
    postgres_connect_timeout: float = 10.0
    #: Runs driven at once.
    concurrency: int = 32
    #: A job whose owner stops heartbeating is taken over after this many seconds.
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 3.0
    #: Seconds between looks for new jobs when idle.
    idle_poll_seconds: float = 0.5
    #: Seconds granted to in-flight tool calls on SIGTERM.
    drain_timeout: float = 30.0
    #: ``host:port`` of /healthz and /metrics; None to disable.
    health: str | None = "127.0.0.1:9464"
    #: Attempts per job before it is marked failed.
    max_attempts: int = 5

    def __post_init__(self) -> None:
        self._check_numbers("worker")
        _positive(self.concurrency, "worker.concurrency")
        _positive(self.lease_seconds, "worker.lease_seconds")
        _positive(self.heartbeat_seconds, "worker.heartbeat_seconds")
        _positive(self.postgres_connect_timeout, "worker.postgres_connect_timeout")
        if self.postgres_pool_size is not None:
            _positive(self.postgres_pool_size, "worker.postgres_pool_size")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise errors.ConfigError("worker.heartbeat_seconds: must be < worker.lease_seconds")
        _positive(self.idle_poll_seconds, "worker.idle_poll_seconds")
        _positive(self.max_attempts, "worker.max_attempts")
        if self.drain_timeout < 0:
            raise errors.ConfigError("worker.drain_timeout: must be >= 0")
        if self.health is not None:
            split_address(self.health, "worker.health")
        if self.store == "postgres" and not self.postgres_dsn:
            raise errors.ConfigError(
                "worker.postgres_dsn: required when worker.store is 'postgres'"
            )


def split_address(address: str, key: str) -> tuple[str, int]:
    """``host:port`` as its parts; a ConfigError naming ``key`` when it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise errors.ConfigError(
            f"{key}: expected host:port with a port in 0-65535, got {address!r}"
        )
    return host.strip("[]") or "127.0.0.1", int(port)


class LoggingConfig(_Section, frozen=True):
    """stdlib logging set-up done by the CLI."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Config(_Section, frozen=True):
    """All settings of a deployment."""

    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    poll: PollConfig = msgspec.field(default_factory=PollConfig)
    run: RunConfig = msgspec.field(default_factory=RunConfig)
    tools: ToolsConfig = msgspec.field(default_factory=ToolsConfig)
    approvals: ApprovalsConfig = msgspec.field(default_factory=ApprovalsConfig)
    worker: WorkerConfig = msgspec.field(default_factory=WorkerConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        # ``Config(api={"base_url": ...})``: convert a mapping to its section (validated as a
        # file would be) instead of failing later with an AttributeError.
        hints = typing.get_type_hints(type(self))
        for name in self.__struct_fields__:
            value, kind = getattr(self, name), hints[name]
            if isinstance(value, Mapping):
                msgspec.structs.force_setattr(self, name, _convert(dict(value), kind, name))
            elif not isinstance(value, kind):
                raise errors.ConfigError(
                    f"{name}: expected a {kind.__name__} or a mapping, got {type(value).__name__}"
                )

    def api_key(self, env: Mapping[str, str] | None = None) -> Secret | None:
        """The API key from the variable ``api.api_key_env`` names, if set and non-empty."""
        value = (os.environ if env is None else env).get(self.api.api_key_env, "")
        return check_key(value, self.api.api_key_env) if value else None

    @property
    def uses_emulator(self) -> bool:
        """No endpoint configured: the CLI starts the bundled emulator (decided with the key)."""
        return self.api.base_url is None


def check_key(value: str, variable: str) -> Secret:
    """``value`` as a Secret; a ConfigError naming ``variable`` if no HTTP header can carry it."""
    if not value.isprintable() or not value.isascii() or value != value.strip():
        raise errors.ConfigError(
            f"{variable}: the API key contains whitespace, control characters (CR/LF) or "
            "non-ASCII characters"
        )
    return Secret(value)


def _sections() -> dict[str, type[_Section]]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in Config.__struct_fields__}


def _yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` with every failure (syntax, bad dates, deep nesting) as one line."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise errors.ConfigError(f"{what}: not valid YAML: {problem}{where}") from None
    except RecursionError:
        raise errors.ConfigError(f"{what}: not valid YAML: nested too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        message = " ".join(str(exc).split())
        raise errors.ConfigError(f"{what}: not valid YAML: {message}") from None


def _apply_env(raw: dict[Any, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply the overrides; returns ``section.key`` → the variable that set it."""
    sections = _sections()
    origin: dict[str, str] = {}
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not sep or not key:
            raise errors.ConfigError(f"{name}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        if section not in sections:
            raise errors.ConfigError(
                f"{name}: unknown section {section!r} (sections: {', '.join(sections)})"
            )
        if key not in sections[section].__struct_fields__:
            valid = ", ".join(sections[section].__struct_fields__)
            raise errors.ConfigError(f"{name}: unknown key {section}.{key} (keys: {valid})")
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise errors.ConfigError(f"{section}: must be a mapping")
        target[key] = _yaml(text, name) if text else None
        origin[f"{section}.{key}"] = name
    return origin


def _convert(raw: dict[Any, Any], kind: type[Any], where: str) -> Any:
    """msgspec.convert with its errors as one-line ConfigErrors, enums listing their values."""
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise errors.ConfigError(f"{where}: {_explain(str(exc), kind)}") from None
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{where}: {exc}") from None
    except RecursionError:
        raise errors.ConfigError(f"{where}: nested too deeply") from None


def _explain(message: str, kind: type[Any]) -> str:
    """Add the valid values to msgspec's ``Invalid enum value`` message."""
    path = message.rpartition(" - at `$")[2].rstrip("`").strip(".").split(".")
    if "Invalid enum value" not in message or not path:
        return message
    target: Any = kind
    for part in path:
        hints = typing.get_type_hints(target) if isinstance(target, type) else {}
        if part not in hints:
            return message
        target = hints[part]
    values = typing.get_args(target)
    return f"{message} (valid: {', '.join(map(str, values))})" if values else message


def loads(text: str, env: Mapping[str, str] | None = None, *, source: str = "config") -> Config:
    """Parse YAML text into a Config, applying ``ORCHESTRATOR_*`` overrides from ``env``."""
    raw = _yaml(text, source) or {}
    if not isinstance(raw, dict):
        raise errors.ConfigError(f"{source}: the top level must be a mapping")
    origin = _apply_env(raw, os.environ if env is None else env)
    try:
        config: Config = _convert(raw, Config, source)
    except errors.ConfigError as exc:
        # A bad value that came from the environment: name the variable too.
        hits = [var for key, var in origin.items() if key in str(exc)]
        if hits:
            raise errors.ConfigError(f"{exc} (set by {', '.join(hits)})") from None
        raise
    return config


def find(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The file to load: ``path``, else ``$ORCHESTRATOR_CONFIG``, else ``./config.yaml`` if any."""
    if path is not None:
        return Path(path)
    named = (os.environ if env is None else env).get(CONFIG_ENV)
    if named:
        return Path(named)
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load a config file (missing path: defaults plus environment overrides)."""
    if path is None:
        return loads("", env)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise errors.ConfigError(
            f"{p}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r})"
        ) from None
    except ValueError as exc:  # e.g. a NUL in the path
        raise errors.ConfigError(f"{p}: cannot read: {exc}") from None
    return loads(text, env, source=str(p))
