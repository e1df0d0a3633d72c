"""Fidelity against ``azure-ai-agents``: Foundry run, step and stream-event payloads generated
from the SDK's own models (every field, every discriminated subtype: ``submit_tool_approval``,
``mcp`` calls, the server-side tool types, ``activities`` steps, ``tool_resources``) decode with
our structs and agree field by field with the SDK's parse.

The SDK's models are not pydantic, so payloads come from a small generator that walks each
model's type hints and rest names (seeded: reproducible), picking subtypes from the models'
discriminator tables and, now and then, a type the SDK does not know.
"""

from __future__ import annotations

import datetime
import enum
import json
import random
import types
import typing
from typing import Any

import msgspec
import pytest
from azure.ai.agents import _types as sdk_types
from azure.ai.agents import models as sdk
from azure.ai.agents._utils.model_base import Model as SdkModel

from orchestrator import approvals, events
from orchestrator.protocols.assistants import models, streaming

_NS: dict[str, Any] = {**vars(sdk), "_models": sdk, "_types": sdk_types}
_hints: dict[type[Any], dict[str, Any]] = {}


def _fields(cls: type[SdkModel]) -> list[tuple[str, Any]]:
    """(rest name, type) of every field of an SDK model."""
    hints = _hints.get(cls)
    if hints is None:
        cls()  # the SDK builds its field table on first use
        hints = _hints[cls] = typing.get_type_hints(cls, globalns=_NS, localns=_NS)
    table = cls._attr_to_rest_field  # type: ignore[attr-defined]
    return [(table[name]._rest_name, hints[name]) for name in table if name in hints]


def _subtypes(cls: type[SdkModel]) -> list[type[SdkModel]]:
    mapping: dict[str, type[SdkModel]] = getattr(cls, "__mapping__", {}) or {}
    return list(mapping.values())


class Gen:
    """Random payloads shaped by the SDK's models."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def word(self) -> str:
        return self.r.choice(["a", "call_1", "srv", "x y", "é", '{"q": 1}', ""])

    def value(self, tp: Any, depth: int = 0) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            if len(options) < len(args) and self.r.random() < 0.15:
                return None
            # Prefer the richer member (an enum or model over a bare str).
            rich = [a for a in options if a is not str] or options
            return self.value(self.r.choice(rich), depth)
        if origin is typing.Literal:
            choice = self.r.choice(args)
            return choice.value if isinstance(choice, enum.Enum) else choice
        if origin is list:
            return [self.value(args[0], depth + 1) for _ in range(self.r.randint(1, 2))]
        if origin is dict:
            return {self.word() or "k": self.value(args[1], depth + 1)}
        if tp is Any:
            return {"k": self.word()}  # the SDK's ``Any`` fields hold JSON objects (schemas)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self.r.choice(list(tp)).value
        if tp is str:
            return self.word()
        if tp is bool:
            return self.r.random() < 0.5
        if tp is int:
            return self.r.randint(0, 2**31)
        if tp is float:
            return self.r.choice([0.0, 0.5, 1.0])
        if tp is datetime.datetime:
            return self.r.randint(1_600_000_000, 1_900_000_000)
        if isinstance(tp, type) and issubclass(tp, SdkModel):
            return self.model(tp, depth + 1)
        raise AssertionError(f"no generator for {tp!r}")

    def model(self, cls: type[SdkModel], depth: int = 0) -> dict[str, Any]:
        subtypes = _subtypes(cls)
        if subtypes:
            if self.r.random() < 0.1:  # a subtype the SDK does not know (yet)
                return {"type": "future_kind", "id": "x_1", "future_kind": {"k": 1}}
            cls = self.r.choice(subtypes)
        out: dict[str, Any] = {}
        for name, tp in _fields(cls):
            optional = type(None) in typing.get_args(tp)
            if optional and self.r.random() < 0.3:
                continue
            out[name] = self.value(tp, depth)
        return out

    def run(self) -> dict[str, Any]:
        payload = self.model(sdk.ThreadRun)
        if self.r.random() < 0.6:  # what we act on: a run waiting for us
            payload["status"] = "requires_action"
            payload["required_action"] = self.model(sdk.RequiredAction)
        return payload


def _ts(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def _text(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _sdk_calls(action: Any, kind: str) -> list[Any]:
    if action is None or _text(action.get("type")) != kind:
        return []
    details = action.get(kind) or {}
    return list(details.get("tool_calls") or [])


def _run_view(ours: models.Run) -> dict[str, Any]:
    action = ours.required_action
    return {
        "id": ours.id,
        "thread_id": ours.thread_id,
        "agent_id": ours.assistant_id,
        "status": ours.status,
        "created_at": ours.created_at,
        "expires_at": ours.expires_at,
        "action": action.type if action else None,
        "calls": [(c.id, c.function.name if c.function else None) for c in ours.tool_calls],
        "approvals": [
            (
                c.id,
                *(None if v is msgspec.UNSET else v for v in (c.name, c.arguments, c.server_label)),
            )
            for c in ours.approval_calls
        ],
        "usage": (ours.usage.prompt_tokens, ours.usage.total_tokens) if ours.usage else None,
        "error": (ours.last_error.code, ours.last_error.message) if ours.last_error else None,
        "metadata": ours.metadata,
        "tools": [t.type for t in ours.tools],
        "tool_resources": None if ours.tool_resources is msgspec.UNSET else ours.tool_resources,
    }


def _sdk_run_view(run: sdk.ThreadRun, payload: dict[str, Any]) -> dict[str, Any]:
    action = run.required_action
    waiting = run.status == "requires_action"
    calls = _sdk_calls(action, "submit_tool_outputs") if waiting else []
    approvals_ = _sdk_calls(action, "submit_tool_approval") if waiting else []
    usage = run.usage
    return {
        "id": run.id,
        "thread_id": run.thread_id,
        "agent_id": run.agent_id,
        "status": _text(run.status),
        "created_at": _ts(run.created_at),
        "expires_at": _ts(run.expires_at),
        "action": _text(action.type) if action else None,
        "calls": [(c["id"], (c.get("function") or {}).get("name")) for c in calls],
        "approvals": [
            (c["id"], c.get("name"), c.get("arguments"), c.get("server_label")) for c in approvals_
        ],
        "usage": (usage.prompt_tokens, usage.total_tokens) if usage else None,
        "error": (run.last_error.code, run.last_error.message) if run.last_error else None,
        "metadata": run.metadata,
        "tools": [_text(t.type) for t in run.tools or []],
        "tool_resources": payload.get("tool_resources"),
    }


def _step_view(ours: models.RunStep) -> dict[str, Any]:
    d = ours.step_details
    return {
        "id": ours.id,
        "run_id": ours.run_id,
        "agent_id": ours.assistant_id,
        "type": ours.type,
        "status": ours.status,
        "details": d.type if d else None,
        "calls": [
            (c.id, c.type, c.name, c.server_label, c.output if c.type == "mcp" else None)
            for c in (d.tool_calls or [] if d else [])
        ],
        "activities": [(a.id, a.type, a.server_label) for a in (d.activities or [] if d else [])],
        "message_id": d.message_creation.message_id if d and d.message_creation else None,
    }


def _sdk_step_view(step: sdk.RunStep) -> dict[str, Any]:
    d = step.step_details
    kind = _text(d.get("type")) if d is not None else None
    calls = list(d.get("tool_calls") or []) if kind == "tool_calls" else []
    acts = list(d.get("activities") or []) if kind == "activities" else []
    mc = d.get("message_creation") if kind == "message_creation" else None
    return {
        "id": step.id,
        "run_id": step.run_id,
        "agent_id": step.agent_id,
        "type": _text(step.type),
        "status": _text(step.status),
        "details": kind,
        "calls": [
            (
                c.get("id"),
                c.get("type"),
                c.get("name") if c.get("type") == "mcp" else None,
                c.get("server_label") if c.get("type") == "mcp" else None,
                c.get("output") if c.get("type") == "mcp" else None,
            )
            for c in calls
        ],
        "activities": [(a.get("id"), a.get("type"), a.get("server_label")) for a in acts],
        "message_id": (mc or {}).get("message_id") if kind == "message_creation" else None,
    }


def _only_mcp_fields(view: dict[str, Any]) -> dict[str, Any]:
    """Server label and name mean something on ``mcp`` calls only (ours keeps them all)."""
    view["calls"] = [
        (i, t, n if t == "mcp" else None, s if t == "mcp" else None, o)
        for i, t, n, s, o in view["calls"]
    ]
    return view


SEEDS = range(40)
#: Steps come in many subtypes (three detail kinds, fifteen tool-call types): more draws.
STEP_SEEDS = range(150)


@pytest.mark.parametrize("seed", SEEDS)
def test_run_agrees_with_sdk(seed: int) -> None:
    payload = Gen(seed).run()
    ours = models.decode(json.dumps(payload), models.Run)
    assert _run_view(ours) == _sdk_run_view(sdk.ThreadRun(payload), payload)


@pytest.mark.parametrize("seed", STEP_SEEDS)
def test_run_step_agrees_with_sdk(seed: int) -> None:
    payload = Gen(seed).model(sdk.RunStep)
    ours = models.decode(json.dumps(payload), models.RunStep)
    assert _only_mcp_fields(_step_view(ours)) == _sdk_step_view(sdk.RunStep(payload))


def test_every_discriminated_subtype_is_covered() -> None:
    """The generator reaches each subtype the SDK knows (so the tests above see them all)."""
    seen: set[str] = set()
    for seed in STEP_SEEDS:
        g = Gen(seed)
        run, step = g.run(), g.model(sdk.RunStep)
        seen.add(str((run.get("required_action") or {}).get("type")))
        details = step.get("step_details") or {}
        seen.add(str(details.get("type")))
        seen.update(str(c.get("type")) for c in details.get("tool_calls") or [])
    wanted = {"submit_tool_approval", "submit_tool_outputs", "activities", "tool_calls", "mcp"}
    wanted |= {"bing_grounding", "openapi", "azure_ai_search", "connected_agent"}
    assert wanted <= seen, wanted - seen


_STEP_EVENTS = [e.value for e in sdk.RunStepStreamEvent if e.value != "thread.run.step.delta"]
_RUN_EVENTS = [e.value for e in sdk.RunStreamEvent]


@pytest.mark.parametrize("seed", range(12))
def test_stream_events_agree_with_sdk(seed: int) -> None:
    g = Gen(seed)
    run_payload, step_payload = g.run(), g.model(sdk.RunStep)
    run_name, step_name = g.r.choice(_RUN_EVENTS), g.r.choice(_STEP_EVENTS)
    run_event = streaming.decode_event(
        streaming.SSEMessage(event=run_name, data=json.dumps(run_payload).encode())
    )
    assert isinstance(run_event, streaming.RunEvent)
    assert _run_view(run_event.run) == _sdk_run_view(sdk.ThreadRun(run_payload), run_payload)
    step_event = streaming.decode_event(
        streaming.SSEMessage(event=step_name, data=json.dumps(step_payload).encode())
    )
    assert isinstance(step_event, streaming.StepEvent)
    assert _only_mcp_fields(_step_view(step_event.step)) == _sdk_step_view(
        sdk.RunStep(step_payload)
    )


async def _collect(step: models.RunStep) -> list[events.ServerToolObserved]:
    seen: list[events.Event] = []

    async def emit(event: events.Event) -> None:
        seen.append(event)

    await approvals.report_server_tools(step, emit)
    return [e for e in seen if isinstance(e, events.ServerToolObserved)]


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(12))
async def test_server_side_calls_are_reported_never_ours(seed: int) -> None:
    payload = Gen(seed).model(sdk.RunStep)
    step = models.decode(json.dumps(payload), models.RunStep)
    observed = await _collect(step)
    details = payload.get("step_details") or {}
    calls = details.get("tool_calls") or [] if details.get("type") == "tool_calls" else []
    acts = details.get("activities") or [] if details.get("type") == "activities" else []
    expected = [c["id"] for c in calls if c.get("type") != "function"] + [a["id"] for a in acts]
    assert [o.item_id for o in observed] == expected
