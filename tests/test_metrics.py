"""Prometheus label values stay bounded whatever the model or the server invents."""

import msgspec
import pytest

from orchestrator import events, metrics
from orchestrator.protocols.assistants import models

pytestmark = pytest.mark.skipif(not metrics.AVAILABLE, reason="prometheus-client not installed")


def series(m: metrics.Metrics, name: str) -> set[tuple[tuple[str, str], ...]]:
    return {
        tuple(sorted(sample.labels.items()))
        for family in m.registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def finished(name: str, error: str | None = None) -> events.ToolCallFinished:
    return events.ToolCallFinished(
        run_id="run_1",
        thread_id="thread_1",
        tool_call_id="c",
        name=name,
        output="",
        error_type=error,
    )


def test_tool_names_the_model_invents_share_one_unknown_label() -> None:
    m = metrics.Metrics()
    m.observe(finished("lookup"))
    m.observe(finished("lookup", "timeout"))
    for i in range(100):
        m.observe(finished(f"made_up_{i}", "unknown_tool"))
    m.observe(finished("", "unsupported_call_type"))
    assert series(m, "orchestrator_tool_calls_total") == {
        (("outcome", "ok"), ("tool", "lookup")),
        (("outcome", "timeout"), ("tool", "lookup")),
        (("outcome", "unknown_tool"), ("tool", "unknown")),
        (("outcome", "unsupported_call_type"), ("tool", "unknown")),
    }
    tools_seen = {dict(s)["tool"] for s in series(m, "orchestrator_tool_latency_seconds_count")}
    assert tools_seen == {"lookup", "unknown"}


def test_statuses_the_server_invents_share_one_unknown_label() -> None:
    m = metrics.Metrics()
    for status in ["queued", "in_progress", *(f"weird_{i}" for i in range(50))]:
        run = msgspec.convert({"id": "r", "thread_id": "t", "status": status}, models.Run)
        m.observe(
            events.StatusChanged(run_id="r", thread_id="t", previous=None, current=status, run=run)
        )
    labels = {dict(s)["status"] for s in series(m, "orchestrator_run_transitions_total")}
    assert labels == {"queued", "in_progress", "unknown"}
    assert labels - {"unknown"} <= set(models.RunStatus)
