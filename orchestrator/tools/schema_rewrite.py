"""Rewrites of msgspec's JSON Schema for function definitions.

``inline``: a self-contained schema. Every ``$ref`` is replaced by its definition; only recursive
types keep a ``$defs`` entry (a ``$ref`` with sibling keywords, which strict mode refuses, is
unrolled one level instead).

``strict``: OpenAI's Structured Outputs subset. Every object lists all its properties as required
and says ``additionalProperties: false``; only the keywords of the original strict subset stay
(``type properties required additionalProperties items anyOf enum const description title $defs
$ref``). Validation keywords (``minimum``, ``maxLength``, ``pattern``, ``format``, ``default``...)
are moved into the node's ``description`` as text, so the model still reads them, and msgspec
still enforces them when decoding. Fixed-length tuples (``prefixItems``) become arrays of the
union of their item types. Free-form objects (``dict``) and untyped values (``Any``) have no
strict form and raise ``UnsupportedSchema``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["UnsupportedSchema", "inline", "strict"]

Schema = dict[str, Any]

_DEFS_PREFIX: Final = "#/$defs/"
_STRICT_KEYWORDS: Final = frozenset(
    {
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
)
# keyword → how its value reads in a description; keywords not listed are dropped silently
_NOTES: Final[Mapping[str, str]] = {
    "default": "default {}",
    "minimum": "minimum {}",
    "maximum": "maximum {}",
    "exclusiveMinimum": "greater than {}",
    "exclusiveMaximum": "less than {}",
    "multipleOf": "a multiple of {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "pattern": "matching the regular expression {}",
    "format": "format {}",
    "contentEncoding": "encoding {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "minProperties": "at least {} entries",
    "maxProperties": "at most {} entries",
}
_JSON_TYPES: Final[Mapping[type, str]] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


class UnsupportedSchema(ValueError):
    """The schema has no equivalent in the strict subset; the message names the path."""


def _map_children(node: Schema, fn: Callable[[Schema, str], Schema]) -> Schema:
    """A copy of ``node`` with each direct subschema replaced by ``fn(subschema, path_step)``."""
    out = dict(node)
    for key in ("properties", "$defs", "patternProperties"):
        if isinstance(out.get(key), dict):
            prefix = ".$defs." if key == "$defs" else "."
            out[key] = {name: fn(sub, f"{prefix}{name}") for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not", "contains"):
        if isinstance(out.get(key), dict):
            out[key] = fn(out[key], "[]" if key == "items" else f".<{key}>")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(out.get(key), list):
            step = "[{}]" if key == "prefixItems" else ""
            out[key] = [fn(sub, step.format(i)) for i, sub in enumerate(out[key])]
    return out


def _refs(node: Schema) -> set[str]:
    found: set[str] = set()

    def visit(sub: Schema, _step: str) -> Schema:
        ref = sub.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
            found.add(ref[len(_DEFS_PREFIX) :])
        return _map_children(sub, visit)

    visit(node, "")
    return found


def _cyclic(defs: Mapping[str, Schema]) -> set[str]:
    """Definitions that can reach themselves through ``$ref``s."""
    edges = {name: _refs(body) for name, body in defs.items()}
    cyclic: set[str] = set()
    for start in defs:
        seen: set[str] = set()
        todo = list(edges[start])
        while todo:
            name = todo.pop()
            if name == start:
                cyclic.add(start)
                break
            if name not in seen and name in edges:
                seen.add(name)
                todo.extend(edges[name])
    return cyclic


def inline(defs: Mapping[str, Schema], root: str) -> Schema:
    """The definition ``root`` with every non-recursive ``$ref`` replaced by its target."""
    cyclic = _cyclic(defs)

    def resolve(node: Schema, expanding: tuple[str, ...]) -> Schema:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
            name = ref[len(_DEFS_PREFIX) :]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if name in cyclic and (not siblings or name in expanding):
                return {"anyOf": [{"$ref": ref}], **siblings} if siblings else {"$ref": ref}
            # the use site's keywords (description, default) win over the definition's
            return {**resolve(defs[name], (*expanding, name)), **siblings}
        return _map_children(node, lambda sub, _step: resolve(sub, expanding))

    schema = resolve(defs[root], (root,))
    kept: dict[str, Schema] = {}
    todo = _refs(schema)
    while todo:
        name = todo.pop()
        if name not in kept:
            kept[name] = resolve(defs[name], (name,))
            todo |= _refs(kept[name])
    if kept:
        schema["$defs"] = dict(sorted(kept.items()))
    return schema


def strict(schema: Schema) -> Schema:
    """A copy of ``schema`` in OpenAI's strict subset; raise ``UnsupportedSchema`` if impossible."""
    return _strict(schema, "$")


def _strict(node: Schema, path: str) -> Schema:
    node = dict(node)
    notes: list[str] = []
    if "prefixItems" in node:
        node["items"] = _union(node.pop("prefixItems"))
        if node.get("minItems") is not None and node.get("minItems") == node.get("maxItems"):
            notes.append(f"exactly {node.pop('minItems')} items")
            node.pop("maxItems")
    for key in [k for k in node if k not in _STRICT_KEYWORDS]:
        value = node.pop(key)
        template = _NOTES.get(key)
        if template is not None:
            notes.append(template.format(json.dumps(value, ensure_ascii=False)))
        elif key == "uniqueItems" and value:
            notes.append("no duplicate items")
    if node.get("type") == "object" or "properties" in node:
        if "properties" not in node or node.get("additionalProperties", False) is not False:
            raise UnsupportedSchema(
                f"`{path}`: an object with free-form keys (a dict) has no strict form; "
                "use a Struct, dataclass or TypedDict"
            )
        node["type"] = "object"
        node["required"] = list(node["properties"])
        node["additionalProperties"] = False
    if node.get("type") == "array" and "items" not in node:
        raise UnsupportedSchema(f"`{path}`: an array needs an item type in strict mode")
    if "enum" in node and "type" not in node:
        kinds = {_JSON_TYPES.get(type(v)) for v in node["enum"]}
        if len(kinds) == 1 and None not in kinds:
            node["type"] = kinds.pop()
    if not node.keys() & {"type", "anyOf", "enum", "const", "$ref"}:
        raise UnsupportedSchema(f"`{path}`: a value without a type (Any) has no strict form")
    node = _map_children(node, lambda sub, step: _strict(sub, path + step))
    if notes:
        text = "; ".join(notes)
        node["description"] = f"{node['description']} ({text})" if "description" in node else text
    return node


def _union(variants: list[Schema]) -> Schema:
    unique: list[Schema] = []
    for variant in variants:
        if variant not in unique:
            unique.append(variant)
    return unique[0] if len(unique) == 1 else {"anyOf": unique}
