"""Answering one ``requires_action``: every tool call at once, each within its own deadline.

Calls run concurrently in one task group under a capacity limiter. Each gets
``min(tool.timeout or tools.timeout, deadline - tools.deadline_margin - now)`` seconds once it
holds a slot; waiting for a slot counts against the run's deadline only. A failure in one call
(bad JSON, bad arguments, unknown tool, an exception, a timeout) becomes that call's error
output and never disturbs the others; a ``CancelledError`` raised by a tool body itself is such
a failure too, while cancelling ``dispatch`` itself cancels every call and propagates.

Sync tools run on daemon threads (``tool_threads``). A timed-out one is abandoned: its thread
runs on, keeping its concurrency slot until it returns, and a warning says so; past
``tools.max_abandoned_threads`` such threads in the process, sync calls are refused. Outputs
and error texts are made encodable (lone surrogates become U+FFFD) before anyone stores or
sends them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import msgspec

from orchestrator import config, errors, scrub, tools
from orchestrator.protocols import base
from orchestrator.protocols.assistants import models
from orchestrator.tools import threads as tool_threads

__all__ = ["AnyToolCall", "ToolError", "ToolResult", "dispatch", "error_output"]

logger = logging.getLogger(__name__)

#: Characters of an exception message, and of a traceback, kept in an error output.
MAX_ERROR_MESSAGE: Final = 2_000
MAX_TRACEBACK: Final = 8_000
#: Tool names listed in an ``unknown_tool`` message.
MAX_LISTED_TOOLS: Final = 30


#: A tool call of either protocol: the Assistants one, or the protocol-neutral ``ToolCall``.
AnyToolCall = models.RequiredToolCall | base.ToolCall


class ToolError(msgspec.Struct, frozen=True):
    """Why a call failed."""

    #: ``invalid_json`` | ``invalid_arguments`` | ``unknown_tool`` | ``tool_exception`` |
    #: ``timeout`` | ``unavailable`` (too many abandoned threads) | ``unsupported_call_type``
    type: str
    message: str


class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to one tool call; ``output`` is what gets submitted, errors included."""

    tool_call_id: str
    name: str
    output: str
    error: ToolError | None = None
    #: Seconds from the start of dispatch to the end of this call.
    duration: float

    @property
    def ok(self) -> bool:
        """The tool ran and returned."""
        return self.error is None

    def to_output(self) -> models.ToolOutput:
        """The entry for ``submit_tool_outputs``."""
        return models.ToolOutput(tool_call_id=self.tool_call_id, output=self.output)


class _ErrorBody(msgspec.Struct, omit_defaults=True):
    type: str
    message: str
    traceback: str | None = None


class _ErrorOutput(msgspec.Struct):
    error: _ErrorBody


def error_output(error: ToolError, traceback_text: str | None = None) -> str:
    """``{"error": {"type": ..., "message": ...}}``: a failure as the model reads it."""
    body = _ErrorBody(type=error.type, message=error.message, traceback=traceback_text)
    return models.encode(_ErrorOutput(error=body)).decode("utf-8")


async def dispatch(
    calls: Sequence[AnyToolCall],
    registry: tools.ToolRegistry,
    settings: config.ToolsConfig,
    *,
    run_id: str,
    thread_id: str,
    deadline: float | None = None,
    limiter: anyio.CapacityLimiter | None = None,
    attempt: int = 1,
    attempts: Mapping[str, int] | None = None,
    guard: Callable[[], None] | None = None,
    on_result: Callable[[ToolResult], Awaitable[None]] | None = None,
) -> list[ToolResult]:
    """Run ``calls`` concurrently; one result per call, in the order of ``calls``.

    ``deadline`` is an absolute Unix time (e.g. the run's ``expires_at``); ``limiter`` caps calls
    in flight (share one across runs; default: ``settings.concurrency`` for this dispatch).
    ``attempts`` gives a call's ``ToolContext.attempt`` by call id (default ``attempt``).
    ``guard`` is called right before each tool body starts and may raise to stop the round
    (the worker's claim is gone: no tool may start under it).
    ``on_result`` is awaited, shielded from cancellation, as each call finishes. If a call
    failed and its ``on_error`` (the tool's, else ``settings.on_error``) is ``raise``, the other
    calls still finish, then ``errors.ToolFailure`` is raised for the first such call.
    """
    if not calls:
        return []
    job = _Job(
        registry=registry,
        settings=settings,
        run_id=run_id,
        thread_id=thread_id,
        cutoff=None if deadline is None else deadline - settings.deadline_margin,
        limiter=limiter if limiter is not None else anyio.CapacityLimiter(settings.concurrency),
        attempt=attempt,
        attempts=attempts or {},
        guard=guard,
        started=time.perf_counter(),
    )
    results: list[ToolResult | None] = [None] * len(calls)

    async def run(index: int, call: AnyToolCall) -> None:
        result = await job.call(call)
        results[index] = result
        if on_result is not None:
            # the tool has run: recording that must not be lost to a cancellation
            with anyio.CancelScope(shield=True):
                await on_result(result)

    try:
        async with anyio.create_task_group() as tg:
            for index, call in enumerate(calls):
                tg.start_soon(run, index, call)
    except ExceptionGroup as group:
        # only on_result can raise here; hand its error to the caller as it was raised
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise

    done = [r for r in results if r is not None]
    for result in done:
        if result.error is not None and job.on_error(result.name) == "raise":
            raise errors.ToolFailure(
                f"tool {result.name!r} failed ({result.error.type}): {result.error.message}",
                tool_call_id=result.tool_call_id,
                tool_name=result.name,
            )
    return done


@dataclass(frozen=True, kw_only=True)
class _Job:
    """What every call of one dispatch shares."""

    registry: tools.ToolRegistry
    settings: config.ToolsConfig
    run_id: str
    thread_id: str
    #: Absolute Unix time by which every call must be over (deadline minus margin).
    cutoff: float | None
    limiter: anyio.CapacityLimiter
    attempt: int
    attempts: Mapping[str, int]
    guard: Callable[[], None] | None
    started: float

    def on_error(self, name: str) -> tools.OnError:
        tool = self.registry.get(name)
        own = tool.on_error if tool is not None else None
        return own if own is not None else self.settings.on_error

    def _log(self, call_id: str, name: str, **fields: Any) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "tool_call_id": call_id,
            "tool": name,
            **fields,
        }

    def _result(
        self,
        call_id: str,
        name: str,
        output: str,
        error: ToolError | None = None,
        *,
        exc: BaseException | None = None,
        traceback_text: str | None = None,
    ) -> ToolResult:
        duration = time.perf_counter() - self.started
        # what a tool or the model produced may hold lone surrogates (``os.fsdecode`` of an
        # undecodable file name): the ledger, the logs and the submit all need UTF-8
        call_id, name, output = (
            scrub.surrogates(call_id),
            scrub.surrogates(name),
            scrub.surrogates(output),
        )
        if error is not None:
            message = scrub.surrogates(tools.truncate(error.message, MAX_ERROR_MESSAGE))
            error = ToolError(error.type, message)
            if traceback_text is not None:
                traceback_text = scrub.surrogates(traceback_text)
            output = error_output(error, traceback_text)
            warn = error.type in ("tool_exception", "timeout", "unknown_tool")
            logger.log(
                logging.WARNING if warn else logging.INFO,
                "tool call %s (%s) failed: %s: %s",
                call_id,
                name,
                error.type,
                error.message,
                # A tool raising is expected (its message goes to the model): one line, and the
                # traceback only when this logger is at DEBUG.
                exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None,
                extra=self._log(call_id, name, error_type=error.type, duration=duration),
            )
        else:
            logger.debug(
                "tool call %s (%s) done",
                call_id,
                name,
                extra=self._log(call_id, name, duration=duration, output_chars=len(output)),
            )
        return ToolResult(
            tool_call_id=call_id, name=name, output=output, error=error, duration=duration
        )

    async def call(self, call: AnyToolCall) -> ToolResult:
        """One call, from its JSON arguments to its output; never raises but cancellation."""
        if isinstance(call, models.RequiredToolCall):
            function = call.function
            if call.type == "function" and function is not None:
                call = base.ToolCall(id=call.id, name=function.name, arguments=function.arguments)
            else:
                name = "" if function is None else function.name
                return self._unsupported(call.id, name, call.type)
        if call.type != "function":
            return self._unsupported(call.id, call.name, call.type)
        tool = self.registry.get(call.name)
        if tool is None:
            names = sorted(t.name for t in self.registry)
            listed = ", ".join(names[:MAX_LISTED_TOOLS]) + (
                ", ..." if len(names) > MAX_LISTED_TOOLS else ""
            )
            message = f"no tool named {call.name!r}; available tools: {listed or 'none'}"
            return self._result(call.id, call.name, "", ToolError("unknown_tool", message))
        try:
            values = tool.decode_arguments(call.arguments)
        except Exception as exc:
            return self._result(call.id, tool.name, "", _argument_error(exc), exc=exc)
        if self.cutoff is not None and self.cutoff <= time.time():
            return self._not_started(call.id, tool.name, "no time")
        return await self._invoke(call.id, tool, values)

    async def _invoke(
        self, call_id: str, tool: tools.Tool[..., Any], values: msgspec.Struct
    ) -> ToolResult:
        timeout = tool.timeout if tool.timeout is not None else self.settings.timeout
        budget = timeout
        slot = object()  # this call's borrower: a thread that outlives the call releases it
        if not await self._acquire(slot):
            return self._not_started(call_id, tool.name, "no free slot")
        release = functools.partial(self.limiter.release_on_behalf_of, slot)
        if self.guard is not None:
            try:
                self.guard()  # no tool may start once the right to act is gone
            except BaseException:
                release()
                raise
        now = time.time()
        if self.cutoff is not None:
            budget = min(timeout, self.cutoff - now)
        if budget <= 0:  # the slot came too late to start at all
            release()
            return self._not_started(call_id, tool.name, "no free slot")
        run_sync = None
        if not tool.is_async:
            cap = self.settings.max_abandoned_threads
            if tool_threads.abandoned.count >= cap:
                release()
                message = (
                    f"{cap} timed-out sync tool threads are still running "
                    "(tools.max_abandoned_threads); the tool was not started"
                )
                return self._result(call_id, tool.name, "", ToolError("unavailable", message))
            # from here the thread releases the slot when the body returns, however late
            run_sync = functools.partial(_guarded_run, self.guard, release)
        try:
            context = tools.ToolContext(
                run_id=self.run_id,
                thread_id=self.thread_id,
                tool_call_id=call_id,
                tool_name=tool.name,
                deadline=now + budget,
                attempt=self.attempts.get(call_id, self.attempt),
            )
            with anyio.move_on_after(budget):
                try:
                    value = await tool.invoke(values, context, run_sync=run_sync)
                except errors.LeaseLost:
                    raise  # the guard, checked again in the tool's thread: not the tool's error
                except Exception as exc:
                    return self._exception(call_id, tool.name, exc)
                except asyncio.CancelledError as exc:
                    if _cancelled_from_outside():
                        raise  # the timeout above, or dispatch itself being cancelled
                    # the tool's own (it awaited something its owner cancelled): a failure
                    return self._exception(call_id, tool.name, exc)
                try:
                    output = tools.encode_output(value)
                except TypeError as exc:
                    return self._exception(call_id, tool.name, exc)
                return self._result(
                    call_id, tool.name, tools.truncate(output, self.settings.max_output_chars)
                )
        finally:
            if run_sync is None:
                release()
        # reached only when the tool ran out of time
        bound = "its timeout" if budget == timeout else "the run's deadline"
        message = f"the tool did not finish within {budget:.3g} s ({bound})"
        if not tool.is_async:
            logger.warning(
                "sync tool %s timed out; its thread is abandoned and runs on, holding its slot",
                tool.name,
                extra=self._log(call_id, tool.name, action="abandon_thread"),
            )
        return self._result(call_id, tool.name, "", ToolError("timeout", message))

    async def _acquire(self, slot: object) -> bool:
        """A slot of the shared limiter, waited for no longer than the cutoff allows."""
        try:
            self.limiter.acquire_on_behalf_of_nowait(slot)  # usually: no timer, no loop turn
            return True
        except anyio.WouldBlock:
            pass
        wait = math.inf if self.cutoff is None else self.cutoff - time.time()
        with anyio.move_on_after(wait):
            await self.limiter.acquire_on_behalf_of(slot)
            return True
        return False

    def _unsupported(self, call_id: str, name: str, kind: str) -> ToolResult:
        message = f"cannot answer a {kind!r} tool call"
        return self._result(call_id, name, "", ToolError("unsupported_call_type", message))

    def _not_started(self, call_id: str, name: str, what: str) -> ToolResult:
        message = f"{what} was left before the run's deadline; the tool was not started"
        return self._result(call_id, name, "", ToolError("timeout", message))

    def _exception(self, call_id: str, name: str, exc: BaseException) -> ToolResult:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        trace = None
        if self.settings.include_traceback:
            trace = "".join(traceback.format_exception(exc))
            if len(trace) > MAX_TRACEBACK:
                trace = "…" + trace[-MAX_TRACEBACK:]  # the innermost frames matter most
        error = ToolError("tool_exception", text)
        return self._result(call_id, name, "", error, exc=exc, traceback_text=trace)


def _argument_error(exc: Exception) -> ToolError:
    """The error output for arguments that did not decode, whatever the decoder raised."""
    if isinstance(exc, msgspec.ValidationError):
        return ToolError("invalid_arguments", str(exc))
    if isinstance(exc, RecursionError):
        return ToolError("invalid_arguments", "the arguments are nested too deeply")
    if isinstance(exc, UnicodeError):
        return ToolError("invalid_json", "the arguments are not valid UTF-8 text")
    if isinstance(exc, msgspec.DecodeError):
        return ToolError("invalid_json", f"the arguments are not valid JSON: {exc}")
    # e.g. an argument Struct's own __post_init__ raising something unusual
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ToolError("invalid_arguments", text)


def _cancelled_from_outside() -> bool:
    """A ``CancelledError`` seen now is a real cancellation of this task, not a tool's own:
    an enclosing cancel scope was cancelled, or someone called ``cancel()`` on the task."""
    if anyio.current_effective_deadline() == -math.inf:
        return True
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _guarded_run(
    guard: Callable[[], None] | None, release: Callable[[], None], body: Callable[[], Any]
) -> Any:
    """A sync body in its thread, the guard checked there first (as close to the body as it
    gets: the thread may start late on a busy or paused process)."""
    if guard is None:
        return await tool_threads.run(body, release=release)

    def checked() -> Any:
        guard()
        return body()

    return await tool_threads.run(checked, release=release)
