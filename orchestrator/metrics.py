"""Prometheus metrics, an optional extra: without prometheus-client every call is a no-op.

``Metrics`` also serves as the client's ``RequestObserver`` and as an event handler, so the
worker wires it in two places and nothing else knows about Prometheus. An embedded service
passes one to the Orchestrator and serves ``exposition()`` from a route of its own::

    m = Metrics()                      # its own CollectorRegistry (or pass registry=...)
    async with Orchestrator(cfg, metrics=m) as orch: ...
    body, content_type = m.exposition()   # e.g. in GET /metrics

With ``Metrics(registry=prometheus_client.REGISTRY)`` the series join the process's default
registry instead, for a service that already exposes it.

Label values never come from what the model or the server makes up, since each new value is
a new time series kept for the process's life: a tool name the registry does not know (the
model invents them) counts as ``unknown``, and so does a run status this code does not know.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Final

from orchestrator import events
from orchestrator.protocols.assistants import models

__all__ = ["AVAILABLE", "UNKNOWN", "Metrics"]

AVAILABLE = importlib.util.find_spec("prometheus_client") is not None

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: The one label value for every tool name or run status not known here.
UNKNOWN: Final = "unknown"
#: Dispatch errors under which the call's name is the model's, not a registered tool's.
_NAME_NOT_REGISTERED: Final = frozenset({"unknown_tool", "unsupported_call_type"})
_STATUSES: Final = frozenset(models.RunStatus)


class Metrics:
    """The worker's counters, gauges and histograms (each a no-op without prometheus-client)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.enabled = AVAILABLE
        if not AVAILABLE:
            return
        import prometheus_client as prom

        self.registry = registry or prom.CollectorRegistry()
        r = self.registry
        self.runs_in_flight = prom.Gauge(
            "orchestrator_runs_in_flight", "Runs being driven now", registry=r
        )
        self.transitions = prom.Counter(
            "orchestrator_run_transitions",
            "Run status transitions seen, by new status",
            ["status"],
            registry=r,
        )
        self.runs_finished = prom.Counter(
            "orchestrator_runs_finished",
            "Runs driven to their end, by outcome",
            ["outcome"],
            registry=r,
        )
        self.tool_calls = prom.Counter(
            "orchestrator_tool_calls",
            "Tool calls by tool and outcome",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_latency = prom.Histogram(
            "orchestrator_tool_latency_seconds",
            "Tool call duration",
            ["tool"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.http_requests = prom.Counter(
            "orchestrator_http_requests",
            "HTTP requests to the API by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.http_latency = prom.Histogram(
            "orchestrator_http_request_seconds", "HTTP request duration", ["endpoint"], registry=r
        )
        self.retries = prom.Counter(
            "orchestrator_http_retries",
            "HTTP requests retried, by endpoint",
            ["endpoint"],
            registry=r,
        )
        self.queue_depth = prom.Gauge(
            "orchestrator_jobs", "Jobs in the store by state", ["state"], registry=r
        )
        self.run_duration = prom.Histogram(
            "orchestrator_run_duration_seconds",
            "Seconds from creating (or adopting) a run to its end, by outcome",
            ["outcome"],
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.tokens = prom.Counter(
            "orchestrator_tokens",
            "Tokens used by finished runs, by kind (prompt or completion)",
            ["kind"],
            registry=r,
        )
        #: Run id → when the driver started following it.
        self._started: dict[str, float] = {}

    # RequestObserver
    def request_finished(self, endpoint: str, status: int | None, seconds: float) -> None:
        """Count one HTTP request (status None: no response)."""
        if self.enabled:
            self.http_requests.labels(endpoint, str(status) if status else "error").inc()
            self.http_latency.labels(endpoint).observe(seconds)

    def request_retried(self, endpoint: str, attempt: int, error: BaseException) -> None:
        """Count one retry."""
        if self.enabled:
            self.retries.labels(endpoint).inc()

    # event handler
    def observe(self, event: Any) -> None:
        """Update the metrics from a driver event."""
        if not self.enabled:
            return
        match event:
            case events.RunCreated(run_id=run_id, at=at) | events.RunAdopted(run_id=run_id, at=at):
                self._started.setdefault(run_id, at)
            case events.ResponseCreated(thread_id=chain, at=at):
                self._started.setdefault(chain, at)  # a chain is timed from its first response
            case events.StatusChanged(current=status):
                self.transitions.labels(_known(status, _STATUSES)).inc()
            case events.ResponseStatusChanged(current=status, response=response):
                self.transitions.labels(_known(status, _STATUSES)).inc()
                if response.is_terminal and response.usage is not None:
                    self.tokens.labels("prompt").inc(max(0, response.usage.input_tokens))
                    self.tokens.labels("completion").inc(max(0, response.usage.output_tokens))
            case events.ResponseFinished(thread_id=chain, outcome=outcome, at=at):
                self.runs_finished.labels(outcome).inc()
                started = self._started.pop(chain, None)
                if started is not None:
                    self.run_duration.labels(outcome).observe(max(0.0, at - started))
            case events.ToolCallFinished(name=name, error_type=error, duration=seconds):
                tool = UNKNOWN if error in _NAME_NOT_REGISTERED else name
                self.tool_calls.labels(tool, error or "ok").inc()
                self.tool_latency.labels(tool).observe(seconds)
            case events.RunFinished(run_id=run_id, run=run, outcome=outcome, at=at):
                self.runs_finished.labels(outcome).inc()  # our own small vocabulary
                started = self._started.pop(run_id, None)
                if started is not None:
                    self.run_duration.labels(outcome).observe(max(0.0, at - started))
                if run.usage is not None:
                    self.tokens.labels("prompt").inc(max(0, run.usage.prompt_tokens))
                    self.tokens.labels("completion").inc(max(0, run.usage.completion_tokens))
            case _:
                pass

    def set_queue_depth(self, counts: dict[str, int]) -> None:
        """Jobs by state."""
        if self.enabled:
            for state, n in counts.items():
                self.queue_depth.labels(state).set(n)

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type of ``/metrics``."""
        if not self.enabled:
            text = (
                "# metrics are off: install the 'metrics' extra "
                "(pip install 'run-orchestrator[metrics]')\n"
            )
            return text.encode(), "text/plain; charset=utf-8"
        import prometheus_client as prom

        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST


def _known(value: str, known: frozenset[str]) -> str:
    return value if value in known else UNKNOWN
