"""The example tools' definitions: a snapshot, valid JSON Schema, and the SDK's param shape.

A deliberate change to a handler's signature or docstring changes its definition: regenerate
the snapshot with ``UPDATE_SNAPSHOTS=1 pytest tests/test_schema_snapshot.py`` and review the
diff like code, since it is what the model reads.
"""

import json
import os
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import msgspec
import pydantic
import pytest
from openai.types.beta.function_tool_param import FunctionToolParam
from openai.types.shared_params.function_definition import FunctionDefinition
from test_schema_oracle import check_strict

import handlers
from orchestrator import tools
from orchestrator.protocols.assistants import models

SNAPSHOT = Path(__file__).parent / "snapshots" / "handlers.json"


def handler_definitions() -> list[dict[str, Any]]:
    assert handlers.__all__  # imported: the handlers registered themselves
    return [
        msgspec.to_builtins(t.definition)
        for t in sorted(tools.default_registry, key=lambda t: t.name)
        if getattr(t.fn, "__module__", "").startswith("handlers.")
    ]


def test_snapshot() -> None:
    current = handler_definitions()
    text = json.dumps(current, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert SNAPSHOT.read_text(encoding="utf-8") == text


def test_handlers_cover_sync_async_and_strict() -> None:
    registered = {t.name: t for t in tools.default_registry}
    names = {"calculate", "current_time", "convert_time", "lookup_country", "search_countries"}
    assert names <= set(registered)
    assert {registered[n].is_async for n in names} == {True, False}
    assert any(registered[n].strict for n in names)


@pytest.mark.parametrize("definition", handler_definitions(), ids=lambda d: d["function"]["name"])
def test_definition_is_valid(definition: dict[str, Any]) -> None:
    tool_param = pydantic.TypeAdapter(FunctionToolParam).validate_python(definition)
    pydantic.TypeAdapter(FunctionDefinition).validate_python(tool_param["function"])
    parameters = definition["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(parameters)
    if definition["function"].get("strict"):
        check_strict(parameters)
    # and it round-trips through our own wire model unchanged
    wire = models.decode(json.dumps(definition), models.ToolDefinition)
    assert msgspec.to_builtins(wire) == definition


def test_the_sdk_check_is_not_a_no_op() -> None:
    with pytest.raises(pydantic.ValidationError):
        pydantic.TypeAdapter(FunctionToolParam).validate_python(
            {"type": "function", "function": {"description": "no name"}}
        )
    with pytest.raises(pydantic.ValidationError):
        pydantic.TypeAdapter(FunctionToolParam).validate_python(
            {"type": "code", "function": {"name": "x"}}
        )
