"""The scripted assistant's pieces without HTTP: argument synthesis, scripts, paging, CLI flags."""

from __future__ import annotations

import argparse
import datetime
import json
import random
import uuid
from typing import Annotated, Any, Literal

import jsonschema  # type: ignore[import-untyped]
import msgspec
import pytest

from orchestrator import config
from orchestrator.emulator import EmulatorSettings, add_arguments, script, settings_from_args, state
from orchestrator.emulator import schema as synth
from orchestrator.protocols.assistants import models


class Address(msgspec.Struct):
    street: str
    zip_code: Annotated[str, msgspec.Meta(min_length=5, max_length=5)]


class Booking(msgspec.Struct):
    city: str
    guest: uuid.UUID
    day: datetime.date
    nights: Annotated[int, msgspec.Meta(ge=1, le=14)]
    unit: Literal["c", "f"] = "c"
    budget: Annotated[float, msgspec.Meta(gt=0, lt=1000)] = 100.0
    address: Address | None = None
    tags: Annotated[list[str], msgspec.Meta(min_length=2, max_length=4)] = []
    rooms: list[Address] = []


HAND_WRITTEN: dict[str, Any] = {
    "type": "object",
    "properties": {
        "when": {"type": "string", "format": "date-time"},
        "id": {"type": "string", "format": "uuid"},
        "mail": {"type": "string", "format": "email"},
        "odd": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
        "step": {"type": "integer", "multipleOf": 5, "minimum": 1, "maximum": 30},
        "neg": {"type": ["number", "null"], "minimum": -5, "maximum": -1},
        "flags": {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True},
        "either": {"oneOf": [{"type": "null"}, {"type": "string", "minLength": 12}]},
        "both": {
            "allOf": [
                {"properties": {"p": {"type": "string"}}, "required": ["p"]},
                {"properties": {"q": {"const": 1}}, "required": ["q"]},
            ]
        },
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
    },
    "required": ["when", "id", "mail", "odd", "step", "neg", "flags", "either", "both", "pair"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", range(60))
def test_synthesised_arguments_fit_a_msgspec_schema(seed: int) -> None:
    schema = msgspec.json.schema(Booking)  # $ref into $defs, as tool schemas are made
    value = synth.synthesize(schema, random.Random(seed))
    jsonschema.validate(value, schema)
    decoded = msgspec.json.decode(json.dumps(value), type=Booking)
    assert 1 <= decoded.nights <= 14


@pytest.mark.parametrize("seed", range(60))
def test_synthesised_arguments_fit_formats_bounds_and_combinators(seed: int) -> None:
    value = synth.synthesize(HAND_WRITTEN, random.Random(seed))
    jsonschema.validate(value, HAND_WRITTEN, format_checker=jsonschema.FormatChecker())
    datetime.datetime.fromisoformat(value["when"])
    uuid.UUID(value["id"])
    assert value["odd"] in (1, 2)
    assert value["step"] % 5 == 0


def test_arguments_are_deterministic_under_a_seed() -> None:
    fn = models.FunctionDefinition(name="book", parameters=msgspec.json.schema(Booking))
    assert script.arguments_for(fn, 1) == script.arguments_for(fn, 1)
    assert script.arguments_for(fn, 1) != script.arguments_for(fn, 2)
    assert script.arguments_for(models.FunctionDefinition(name="bare"), 1) == "{}"


def test_default_script_respects_parallel_and_tool_choice() -> None:
    tools = [
        models.ToolDefinition.for_function(models.FunctionDefinition(name=n)) for n in "ab"
    ] + [models.ToolDefinition(type="code_interpreter")]
    rounds = script.default_script(tools, parallel=True, tool_choice="auto", seed=0)
    assert [(r.kind, [c[0] for c in r.calls]) for r in rounds] == [
        ("tool_calls", ["a", "b"]),
        ("message", []),
    ]
    serial = script.default_script(tools, parallel=False, tool_choice="required", seed=0)
    assert [[c[0] for c in r.calls] for r in serial] == [["a"], ["b"], []]
    named = models.ToolChoice(type="function", function=models.NamedFunction(name="b"))
    only_b = script.default_script(tools, parallel=True, tool_choice=named, seed=0)
    assert [c[0] for c in only_b[0].calls] == ["b"]
    assert script.default_script(tools, parallel=True, tool_choice="none", seed=0) == (
        script.FINAL,
    )


def test_script_parsing() -> None:
    rounds = script.parse_script(
        '[{"think_ms": 30}, {"tool_calls": [{"name": "f"}], "think_ms": 5}, {"stall": true}]'
    )
    assert [r.kind for r in rounds] == ["tool_calls", "stall"]
    assert rounds[0].think == pytest.approx(0.035)
    assert rounds[1].think is None
    assert rounds[0].calls == (("f", "{}"),)
    ends_with_calls = script.parse_script('[{"tool_calls": [{"name": "f", "arguments": {}}]}]')
    assert ends_with_calls[-1] is script.FINAL
    for bad in (
        "not json",
        "[]",
        '[{"think_ms": 5}]',
        '[{"message": "a", "fail": "server_error"}]',
        '[{"tool_calls": []}]',
        '[{"mesage": "typo"}]',
        "[{}]",
    ):
        with pytest.raises(script.ScriptError):
            script.parse_script(bad)


def test_render_message() -> None:
    outs = [("a", "1"), ("b", "2")]
    assert (
        script.render_message(None, outs, "hi")
        == "Here is what the tools returned:\na -> 1\nb -> 2"
    )
    assert script.render_message(None, [], "hi") == "You said: hi"
    assert script.render_message("b={output:b} [{outputs}]", outs, None) == "b=2 [a -> 1\nb -> 2]"


def test_page_cursors() -> None:
    items = [f"x{i}" for i in range(7)]

    def p(**kw: Any) -> tuple[list[str], bool]:
        args: dict[str, Any] = {"limit": None, "order": None, "after": None, "before": None}
        return state.page(items, str, **{**args, **kw})

    assert p(limit="3") == (["x6", "x5", "x4"], True)
    assert p(limit="3", after="x4") == (["x3", "x2", "x1"], True)
    assert p(limit="3", after="x1") == (["x0"], False)
    assert p(order="asc", after="x5") == (["x6"], False)
    assert p(order="asc", before="x3", limit="2") == (["x1", "x2"], True)
    assert p(order="asc", after="x0", before="x3") == (["x1", "x2"], False)
    assert p(after="unknown") == ([], False)
    for bad in ({"limit": "0"}, {"limit": "x"}, {"order": "sideways"}):
        with pytest.raises(state.PageError):
            p(**bad)


def test_cli_flags_round_trip_and_hide_the_key() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--think-delay",
            "0.5",
            "--fault-500",
            "0.25",
            "--fault-after-apply",
            "--poll-after-ms",
            "200",
            "--require-api-key",
            "sk-hidden",
            "--rate-limit-rps",
            "50",
        ]
    )
    s = settings_from_args(args)
    assert s.think_delay == 0.5
    assert s.fault_500 == 0.25
    assert s.fault_after_apply is True
    assert s.poll_after_ms == 200
    assert s.rate_limit_rps == 50.0
    assert s.require_api_key == config.Secret("sk-hidden")
    assert "sk-hidden" not in repr(s)
    defaults = settings_from_args(parser.parse_args([]))
    assert defaults == EmulatorSettings()
    assert defaults.poll_after_ms is None
    assert defaults.run_ttl == 600.0
