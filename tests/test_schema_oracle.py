"""An independent checker of OpenAI's strict-mode schema rules, used by the other schema tests.

Written from the Structured Outputs rules, not from ``orchestrator.tools.schema_rewrite``, so
the two can disagree: the root is an object; every object lists all its properties as required and
has ``additionalProperties: false``; only the (conservative) supported keywords appear; every
node has a type; ``$ref`` stands alone and resolves; arrays say what their items are.
"""

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

ALLOWED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "anyOf",
    "enum",
    "const",
    "description",
    "title",
    "$defs",
    "$ref",
}
JSON_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
MAX_DEPTH = 10


def check_strict(schema: dict[str, Any]) -> None:
    """Raise AssertionError naming the path of the first rule ``schema`` breaks."""
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("type") == "object", "$: the root must be an object"
    assert "anyOf" not in schema, "$: the root must not be anyOf"
    defs = schema.get("$defs", {})
    _check(schema, "$", defs, 0)
    for name, body in defs.items():
        _check(body, f"$defs.{name}", defs, 0)


def _check(node: Any, path: str, defs: dict[str, Any], depth: int) -> None:
    assert isinstance(node, dict), f"{path}: a schema must be an object"
    unknown = set(node) - ALLOWED
    assert not unknown, f"{path}: unsupported keywords {sorted(unknown)}"
    if "$ref" in node:
        assert set(node) == {"$ref"}, f"{path}: $ref with sibling keywords"
        ref = node["$ref"]
        assert ref == "#" or (
            ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in defs
        ), f"{path}: unresolvable $ref {ref}"
        return
    assert node.keys() & {"type", "anyOf", "enum", "const"}, f"{path}: no type"
    types = node.get("type")
    if types is not None:
        for t in types if isinstance(types, list) else [types]:
            assert t in JSON_TYPES, f"{path}: unknown type {t!r}"
    if types == "object" or "properties" in node:
        depth += 1
        assert depth <= MAX_DEPTH, f"{path}: nested deeper than {MAX_DEPTH}"
        props = node.get("properties")
        assert isinstance(props, dict), f"{path}: an object needs properties"
        assert node.get("additionalProperties") is False, f"{path}: additionalProperties"
        assert sorted(node.get("required", [])) == sorted(props), f"{path}: not all required"
        for name, sub in props.items():
            _check(sub, f"{path}.{name}", defs, depth)
    if types == "array":
        assert isinstance(node.get("items"), dict), f"{path}: an array needs items"
        _check(node["items"], f"{path}[]", defs, depth)
    for i, sub in enumerate(node.get("anyOf", [])):
        _check(sub, f"{path}|{i}", defs, depth)


def test_oracle_accepts_a_strict_schema() -> None:
    check_strict(
        {
            "type": "object",
            "properties": {
                "a": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "b": {"type": "array", "items": {"$ref": "#/$defs/T"}},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
            "$defs": {
                "T": {
                    "type": "object",
                    "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}},
                    "required": ["kids"],
                    "additionalProperties": False,
                }
            },
        }
    )


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        ({"type": "array", "items": {"type": "string"}}, "root must be an object"),
        ({"type": "object", "properties": {}, "required": []}, "additionalProperties"),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "required": [],
                "additionalProperties": False,
            },
            "not all required",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer", "minimum": 1}},
                "required": ["a"],
                "additionalProperties": False,
            },
            "unsupported keywords",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {}},
                "required": ["a"],
                "additionalProperties": False,
            },
            "no type",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/X", "description": "d"}},
                "required": ["a"],
                "additionalProperties": False,
                "$defs": {"X": {"type": "string"}},
            },
            "sibling",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "array"}},
                "required": ["a"],
                "additionalProperties": False,
            },
            "needs items",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "object", "additionalProperties": {"type": "string"}}},
                "required": ["a"],
                "additionalProperties": False,
            },
            "needs properties",
        ),
    ],
)
def test_oracle_rejects(schema: dict[str, Any], complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_strict(schema)
