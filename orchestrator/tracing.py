"""OpenTelemetry spans from driver events: an optional extra (the `otel` extra installs it).

Without ``opentelemetry-api`` installed nothing is registered and nothing is paid. With it, each
run is a span (``assistants.run``) carrying its status transitions as span events, and each tool
call a child span (``tool <name>``) timed from the call's own measured duration. Each response
of a Responses chain is a span (``responses.response``), ended with its chain. Spans go to
whatever tracer provider the application configured (the API's no-op one by default).

A run's span ends at ``RunFinished``; a drive that ends by an exception or a cancellation sends
no such event, so the ``Orchestrator`` drives each run inside ``ending_spans()``, which ends
(as errors) the spans of the runs started within it that are still open when it exits that way.

Who registers the recorder: the ``Orchestrator`` does, by itself (``tracer_provider=`` picks the
provider; default the global one), and so does the CLI worker (the global provider). Registering
another one on top records every span twice. The CLI sets up no provider of its own: run it
under ``opentelemetry-instrument`` (package ``opentelemetry-distro`` plus an exporter, configured
by the standard ``OTEL_*`` variables), e.g.
``OTEL_SERVICE_NAME=orchestrator opentelemetry-instrument orchestrator worker``, or set the
global provider in a module listed in ``tools.modules``.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator import events

__all__ = ["AVAILABLE", "SpanRecorder", "ending_spans"]

AVAILABLE = importlib.util.find_spec("opentelemetry") is not None

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider


#: The runs whose spans were started inside the innermost ``ending_spans()`` block.
_started: contextvars.ContextVar[list[tuple[SpanRecorder, str]] | None] = contextvars.ContextVar(
    "orchestrator_tracing_started", default=None
)


@contextlib.contextmanager
def ending_spans() -> Iterator[None]:
    """End the spans of runs started in this block if it exits by an exception or cancellation."""
    started: list[tuple[SpanRecorder, str]] = []
    token = _started.set(started)
    try:
        yield
    except BaseException as exc:
        for recorder, run_id in started:
            recorder.abort(run_id, exc)
        raise
    finally:
        _started.reset(token)


class SpanRecorder:
    """An event handler that turns a run's events into spans.

    The Orchestrator and the CLI worker already register one; add one yourself only where
    nothing does (a ``Driver`` or ``Worker`` wired by hand), else spans are doubled.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer("run-orchestrator", tracer_provider=tracer_provider)
        self._runs: dict[str, Span] = {}
        #: Responses chain id -> ids of its responses with open spans.
        self._chains: dict[str, list[str]] = {}

    def observe(self, event: Any) -> None:
        """Record one driver event (for a ``Driver`` or ``Worker`` you wire yourself)."""
        match event:
            case events.RunCreated(run=run) | events.RunAdopted(run=run):
                self._runs[run.id] = self._tracer.start_span(
                    "assistants.run",
                    attributes={
                        "assistants.run_id": run.id,
                        "assistants.thread_id": run.thread_id,
                        "assistants.assistant_id": run.assistant_id,
                        "assistants.adopted": isinstance(event, events.RunAdopted),
                    },
                )
                if (started := _started.get()) is not None:
                    started.append((self, run.id))
            case events.StatusChanged(run_id=run_id, previous=previous, current=current):
                if (span := self._runs.get(run_id)) is not None:
                    span.add_event("status", {"previous": previous or "", "current": current})
            case events.ToolCallFinished():
                self._tool_span(event)
            case events.OutputsSubmitted(run_id=run_id, outputs=outputs):
                if (span := self._runs.get(run_id)) is not None:
                    span.add_event("tool_outputs.submitted", {"count": len(outputs)})
            case events.ResponseCreated(run_id=run_id, thread_id=chain, response=response):
                self._runs[run_id] = self._tracer.start_span(
                    "responses.response",
                    attributes={
                        "responses.response_id": run_id,
                        "responses.chain": chain,
                        "responses.model": response.model,
                        "responses.adopted": event.adopted,
                    },
                )
                self._chains.setdefault(chain, []).append(run_id)
                if (started := _started.get()) is not None:
                    started.append((self, run_id))
            case events.ResponseStatusChanged(run_id=run_id, previous=previous, current=current):
                if (span := self._runs.get(run_id)) is not None:
                    span.add_event("status", {"previous": previous or "", "current": current})
                    span.set_attribute("responses.status", current)
            case events.ResponseFinished(thread_id=chain, outcome=outcome):
                for response_id in self._chains.pop(chain, []):
                    if (span := self._runs.pop(response_id, None)) is not None:
                        span.set_attribute("responses.outcome", outcome)
                        if outcome != "completed":
                            span.set_status(self._trace.StatusCode.ERROR, outcome)
                        span.end()
            case events.RunFinished(run_id=run_id, outcome=outcome):
                if (span := self._runs.pop(run_id, None)) is not None:
                    span.set_attribute("assistants.outcome", outcome)
                    if outcome != "completed":
                        span.set_status(self._trace.StatusCode.ERROR, outcome)
                    span.end()
            case _:
                pass

    def abort(self, run_id: str, exc: BaseException) -> None:
        """End the span of a run whose drive stopped with ``exc`` (no-op if already ended)."""
        span = self._runs.pop(run_id, None)
        if span is None:
            return
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        outcome = "cancelled" if cancelled else "error"
        span.set_attribute("assistants.outcome", outcome)
        if not cancelled:
            span.record_exception(exc)
        span.set_status(self._trace.StatusCode.ERROR, f"{outcome}: {type(exc).__name__}")
        span.end()

    def _tool_span(self, event: events.ToolCallFinished) -> None:
        parent = self._runs.get(event.run_id)
        context = self._trace.set_span_in_context(parent) if parent is not None else None
        end = time.time_ns()
        span = self._tracer.start_span(
            f"tool {event.name}",
            context=context,
            start_time=end - int(event.duration * 1e9),
            attributes={
                "assistants.tool_call_id": event.tool_call_id,
                "assistants.tool": event.name,
                "assistants.tool_error": event.error_type or "",
            },
        )
        if event.error_type is not None:
            span.set_status(self._trace.StatusCode.ERROR, event.error_type)
        span.end(end_time=end)
