"""The ``Orchestrator``: what a service embeds to drive runs with its tools.

One client (one aiohttp session, one request limiter) and one tool limiter serve every run the
orchestrator drives; its task group owns the background drives behind ``stream()``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from orchestrator import approvals, config, errors, events, responses_driver, tools, tracing
from orchestrator import driver as driver_mod
from orchestrator.http import credentials
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models
from orchestrator.protocols.responses import client as responses_client
from orchestrator.protocols.responses import wire
from orchestrator.tools import check as toolcheck

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from orchestrator.metrics import Metrics

__all__ = ["Orchestrator", "RunStream"]

E = TypeVar("E", bound=events.Event)
Handler = Callable[[Any], Any]


class Orchestrator:
    """Drives Assistants runs to their end, answering tool calls with a registry's tools.

    ::

        async with Orchestrator(config=cfg, registry=registry) as orch:
            result = await orch.run(thread_id=tid, assistant_id=aid)
            async for event in orch.stream(thread_id=tid, assistant_id=aid):
                ...

        async with Orchestrator(base_url="http://127.0.0.1:8089/v1", api_key="sk-...") as orch:
            ...

    ``base_url`` and ``api_key`` are shortcuts over ``config.api`` (the key otherwise comes from
    the variable ``api.api_key_env`` names). The modules in ``tools.modules`` are imported here.
    ``metrics`` records Prometheus series (see ``orchestrator.metrics``); with opentelemetry
    installed, spans go to ``tracer_provider`` (default: the global one).
    """

    def __init__(
        self,
        config: config.Config | None = None,
        *,
        registry: tools.ToolRegistry | None = None,
        client: client_mod.AssistantsClient | None = None,
        base_url: str | None = None,
        api_key: config.Secret | str | None = None,
        handler: Handler | None = None,
        credential: credentials.TokenProvider | None = None,
        approve: approvals.Hook | None = None,
        metrics: Metrics | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        """``credential`` (e.g. ``credentials.EntraToken()``) wins over ``api_key``; with
        neither, ``api.credential`` of the config decides. ``approve`` decides Foundry's MCP
        tool approvals (``async def approve(call) -> bool | Approval``) instead of the
        ``approvals`` policy of the config."""
        from orchestrator import config as config_mod

        self.config = config or config_mod.Config()
        if base_url is not None:
            api = msgspec.structs.replace(self.config.api, base_url=base_url)
            self.config = msgspec.structs.replace(self.config, api=api)
        tools.import_tool_modules(self.config.tools.modules)
        self.registry = registry if registry is not None else tools.default_registry
        self._client = client
        if isinstance(api_key, str):
            api_key = config_mod.check_key(api_key, "api_key")
        self._api_key = api_key
        self._credential = credential
        self._approve = approve
        self._metrics = metrics
        self.tool_check = toolcheck.ToolCheck(self.registry, self.config.tools.check_tools)
        self.subscribers = events.Subscribers()
        if tracing.AVAILABLE:
            self.subscribers.add(tracing.SpanRecorder(tracer_provider).observe)
        if metrics is not None:
            self.subscribers.add(metrics.observe)
        if handler is not None:
            self.subscribers.add(handler)
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._driver: driver_mod.Driver | None = None
        self._responses: responses_client.ResponsesClient | None = None

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._client is None:
                credential = self._credential
                if credential is None and self._api_key is None:
                    credential = credentials.from_config(self.config.api)
                if credential is None and not self._api_key:
                    variable = self.config.api.api_key_env
                    raise errors.ConfigError(
                        f"no API key: set {variable} (api.api_key_env names the variable) or "
                        f"pass api_key= or credential=; requests to "
                        f"{self.config.api.base_url or 'OpenAI'} would go out unauthenticated"
                    )
                self._client = await stack.enter_async_context(
                    client_mod.AssistantsClient(
                        self.config.api,
                        self.config.retry,
                        api_key=self._api_key,
                        credential=credential,
                        observer=self._metrics,
                    )
                )
            self._driver = driver_mod.Driver(
                self._client, self.registry, self.config, approve=self._approve
            )
            key = self._api_key if self._api_key is not None else self.config.api_key()
            self._responses = await stack.enter_async_context(
                responses_client.ResponsesClient(
                    self.config.api, self.config.retry, api_key=key, observer=self._metrics
                )
            )
            self._tg = await stack.enter_async_context(anyio.create_task_group())
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._tg = None
        if stack is None:
            return
        try:
            await stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The task group wraps the body's own exception; let the caller see it unwrapped.
            if exc is None or group.exceptions != (exc,):
                raise

    @property
    def client(self) -> client_mod.AssistantsClient:
        """The shared API client."""
        if self._client is None:
            raise errors.OrchestratorError("use the Orchestrator inside `async with`")
        return self._client

    @property
    def driver(self) -> driver_mod.Driver:
        """The shared run driver."""
        if self._driver is None:
            raise errors.OrchestratorError("use the Orchestrator inside `async with`")
        return self._driver

    @property
    def responses(self) -> responses_client.ResponsesClient:
        """The shared Responses API client."""
        if self._responses is None:
            raise errors.OrchestratorError("use the Orchestrator inside `async with`")
        return self._responses

    def on(self, *types: type[E]) -> Callable[[Handler], Handler]:
        """Decorator: call the function for events of these types (all events when none)."""

        def register(fn: Handler) -> Handler:
            self.subscribers.add(fn, *types)
            return fn

        return register

    def _emitter(self, handler: Handler | None) -> driver_mod.Emit:
        if handler is None:
            return self.subscribers.emit
        local = events.Subscribers()
        local.add(handler)

        async def emit(event: events.Event) -> None:
            await local.emit(event)
            await self.subscribers.emit(event)

        return emit

    async def run(
        self,
        *,
        thread_id: str,
        assistant_id: str,
        handler: Handler | None = None,
        messages: Sequence[models.MessageRequest] = (),
        **params: Any,
    ) -> driver_mod.RunResult:
        """Create a run on an existing thread and drive it to its end.

        ``messages`` go in as ``additional_messages``; ``params`` are any other create-run fields
        (``instructions``, ``model``, ``tools``, ``metadata``, ...).
        """
        body = _create_body(assistant_id, messages, params)
        await self.tool_check.check(self.client, assistant_id, body.tools)
        with tracing.ending_spans():
            return await self.driver.create(thread_id, body, emit=self._emitter(handler))

    async def respond(
        self,
        *,
        model: str | None = None,
        input: str | Sequence[wire.InputItem] = (),
        agent: str | None = None,
        handler: Handler | None = None,
        **params: Any,
    ) -> responses_driver.ResponseResult:
        """Create a background response (Responses API) and drive it through its tool rounds
        to the end: ``await orch.respond(model="gpt-4o", input="What time is it?")``.

        The registry's tools are offered unless ``tools`` is given; ``agent`` names a Foundry
        agent instead of a model; ``params`` are any other create fields (``instructions``,
        ``max_output_tokens``, ``conversation``, ``metadata``...).
        """
        body = responses_driver.request_body(
            self.registry, model=model, input=input, agent=agent, **params
        )
        with tracing.ending_spans():
            return await responses_driver.drive(
                self.responses,
                self.registry,
                self.config,
                body,
                emit=self._emitter(handler),
                tool_limiter=self.driver.tool_limiter,
                approver=self.driver.approver,
            )

    async def create_thread_and_run(
        self,
        *,
        assistant_id: str,
        messages: Sequence[models.MessageRequest] = (),
        handler: Handler | None = None,
        **params: Any,
    ) -> driver_mod.RunResult:
        """Create a thread with ``messages`` and a run on it, and drive the run to its end."""
        thread = models.ThreadRequest(messages=list(messages)) if messages else msgspec.UNSET
        try:
            body = models.CreateThreadAndRun(assistant_id=assistant_id, thread=thread, **params)
        except TypeError as exc:
            raise errors.OrchestratorError(f"create_thread_and_run: {exc}") from exc
        await self.tool_check.check(self.client, assistant_id, body.tools)
        with tracing.ending_spans():
            return await self.driver.create_thread_and_run(body, emit=self._emitter(handler))

    async def create_thread(
        self,
        *,
        messages: Sequence[models.MessageRequest] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> models.Thread:
        """Create a thread (retried like a run's create; see ``Driver.create_thread``)."""
        return await self.driver.create_thread(messages=messages, metadata=metadata)

    async def adopt(
        self, thread_id: str, run_id: str, *, handler: Handler | None = None
    ) -> driver_mod.RunResult:
        """Drive a run created elsewhere to its end."""
        with tracing.ending_spans():
            return await self.driver.adopt(thread_id, run_id, emit=self._emitter(handler))

    async def cancel(self, thread_id: str, run_id: str) -> models.Run:
        """Ask the server to cancel a run."""
        return await self.client.cancel_run(thread_id, run_id)

    def stream(
        self,
        *,
        thread_id: str,
        assistant_id: str,
        messages: Sequence[models.MessageRequest] = (),
        buffer: float = math.inf,
        **params: Any,
    ) -> RunStream:
        """Create and drive a run, yielding its events: ``async for ev in orch.stream(...)``.

        Stopping early cancels the run. Leaving ``async with orch.stream(...) as events`` waits
        for that cancel to land (shielded, up to ``run.cancel_timeout``) before it returns; a
        bare ``async for`` that breaks only starts the cancel, which finishes in the background.
        """
        body = _create_body(assistant_id, messages, params)
        return RunStream(self, thread_id, body, buffer)


class RunStream:
    """The events of one run as an async iterator; the drive runs in the orchestrator's tasks."""

    def __init__(
        self, orch: Orchestrator, thread_id: str, body: models.CreateRun, buffer: float
    ) -> None:
        self._orch = orch
        self._thread_id = thread_id
        self._body = body
        self._buffer = buffer
        self._receive: MemoryObjectReceiveStream[events.Event] | None = None
        self._scope: anyio.CancelScope | None = None
        self._done = anyio.Event()
        self.result: driver_mod.RunResult | None = None
        self.error: BaseException | None = None

    def _start(self) -> MemoryObjectReceiveStream[events.Event]:
        if self._receive is None:
            tg = self._orch._tg
            if tg is None:
                raise errors.OrchestratorError("use the Orchestrator inside `async with`")
            send, self._receive = anyio.create_memory_object_stream[events.Event](self._buffer)
            self._scope = anyio.CancelScope()
            tg.start_soon(self._drive, send)
        return self._receive

    async def _drive(self, send: MemoryObjectSendStream[events.Event]) -> None:
        async def emit(event: events.Event) -> None:
            await self._orch.subscribers.emit(event)
            # The reader may have left; the run still goes to its end.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await send.send(event)

        assert self._scope is not None
        try:
            with self._scope, send, tracing.ending_spans():
                try:
                    orch, body = self._orch, self._body
                    await orch.tool_check.check(orch.client, body.assistant_id, body.tools)
                    self.result = await orch.driver.create(self._thread_id, body, emit=emit)
                except Exception as exc:  # handed to the reader, re-raised there
                    self.error = exc
        finally:
            self._done.set()

    def __aiter__(self) -> AsyncIterator[events.Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[events.Event]:
        try:
            with self._start() as receive:
                async for event in receive:
                    yield event
        finally:
            # A reader that stops early (break, an exception) takes the run down with it,
            # as leaving ``async with orch.stream(...)`` does.
            self._stop_unfinished()
        if self.error is not None:
            raise self.error

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop_unfinished()
        if self._receive is not None:
            self._receive.close()
            # The drive's cancel is shielded and bounded by run.cancel_timeout; wait for it so
            # the thread is free when this returns (also when the caller is being cancelled).
            limit = self._orch.config.run.cancel_timeout + 5
            with anyio.CancelScope(shield=True), anyio.move_on_after(limit):
                await self._done.wait()

    def _stop_unfinished(self) -> None:
        if self._scope is not None and self.result is None and self.error is None:
            self._scope.cancel()


def _create_body(
    assistant_id: str, messages: Sequence[models.MessageRequest], params: dict[str, Any]
) -> models.CreateRun:
    if messages:
        params = {**params, "additional_messages": list(messages)}
    try:
        return models.CreateRun(assistant_id=assistant_id, **params)
    except TypeError as exc:
        raise errors.OrchestratorError(f"unknown create-run parameter: {exc}") from exc
