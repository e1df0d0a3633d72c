"""Arguments valid for a function's JSON schema, drawn deterministically from a seed.

Covers what tool schemas use: ``type`` (also as a list), ``enum``/``const``, ``$ref`` into
``$defs``/``definitions`` (msgspec's schemas), ``anyOf``/``oneOf``/``allOf``, ``required``
properties (optional ones half the time), ``items``/``prefixItems`` with ``minItems``/``maxItems``/
``uniqueItems``, string ``format``s and length bounds, and numeric bounds with ``multipleOf``.
``pattern`` is not honoured (a fixed word is used).

Schemas come from callers, so the work is bounded: past ``_MAX_DEPTH`` optional properties are
left out, ``anyOf``/``oneOf`` take a branch that ends the recursion (``null``, or one without a
``$ref``) and arrays keep to their minimum, so a recursive struct (``next: Node | None``) gets a
short valid chain; past ``_HARD_DEPTH`` or ``_BUDGET`` generated values a subtree is cut short
(the arguments are then invalid, as a model's can be). A schema it cannot read gives ``{}``.
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import uuid
from typing import Any, Final

import msgspec

__all__ = ["synthesize"]

log = logging.getLogger(__name__)

_MAX_DEPTH: Final = 8
#: Below this nesting a subtree is cut short even if that breaks the schema.
_HARD_DEPTH: Final = 32
#: Values generated per call at most (``minItems: 3000000`` must not hold the event loop).
_BUDGET: Final = 20_000
#: Characters of one string at most.
_MAX_TEXT: Final = 10_000
_INT64: Final = 2**63 - 1
_encoder: Final = msgspec.json.Encoder()
#: What a schema written by someone else can make the generator trip over.
_BROKEN: Final = (
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    RecursionError,
    TypeError,
    ValueError,
    ZeroDivisionError,
)
_WORDS: Final = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "glade", "harbor")
_EPOCH: Final = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)

Schema = dict[str, Any]


def synthesize(schema: Schema | None, rng: random.Random) -> Any:
    """A value valid for ``schema`` (an object schema gives a dict); ``{}`` if unreadable."""
    root = schema if isinstance(schema, dict) else {}
    try:
        return _Gen(root, rng).value(root, 0)
    except _BROKEN as exc:
        log.debug("cannot synthesise arguments for this schema: %r", exc)
        return {}


class _Gen:
    __slots__ = ("left", "rng", "root")

    def __init__(self, root: Schema, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.left = _BUDGET

    def resolve(self, schema: Schema) -> Schema:
        seen = 0
        while "$ref" in schema and seen < _MAX_DEPTH:
            node: Any = self.root
            for part in str(schema["$ref"]).lstrip("#/").split("/"):
                if part:
                    key = part.replace("~1", "/").replace("~0", "~")
                    node = node.get(key, {}) if isinstance(node, dict) else {}
            node = node if isinstance(node, dict) else {}
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        return schema

    def value(self, schema: Any, depth: int) -> Any:
        self.left -= 1
        if not isinstance(schema, dict):  # `true`, `false` or junk: anything will do
            return None
        if depth > _HARD_DEPTH or self.left <= 0:
            return None
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(schema["enum"])
        if "allOf" in schema:
            merged: Schema = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self.resolve(part))
            return self.value(merged, depth + 1)
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                raw = [o for o in schema[key] if isinstance(o, dict)] or [{}]
                if depth >= _MAX_DEPTH:  # deep enough: take a branch that ends the recursion
                    ends = [o for o in raw if o.get("type") == "null"]
                    ends = ends or [o for o in raw if "$ref" not in o] or raw
                    pick = self.resolve(ends[0])
                    rest = {k: v for k, v in schema.items() if k != key}
                    return self.value(_merge(rest, pick), depth + 1)
                options = [self.resolve(o) for o in raw]
                # Prefer a non-null branch: a null argument tests little. oneOf needs exactly
                # one match, so take the first option (schemas in tools rarely overlap).
                usable = [o for o in options if o.get("type") != "null"] or options
                pick = usable[0] if key == "oneOf" else self.rng.choice(usable)
                rest = {k: v for k, v in schema.items() if k != key}
                return self.value(_merge(rest, pick), depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = kinds[0]
        if kind is None:
            kind = _infer_type(schema)
        return self._by_type(str(kind), schema, depth)

    def _by_type(self, kind: str, schema: Schema, depth: int) -> Any:
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind == "integer":
            return self.integer(schema)
        if kind == "number":
            return self.number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema)

    def object(self, schema: Schema, depth: int) -> dict[str, Any]:
        props: dict[str, Schema] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if name in required or (depth < _MAX_DEPTH and self.rng.random() < 0.5):
                out[name] = self.value(sub if isinstance(sub, dict) else {}, depth + 1)
        for name in required - out.keys():  # required but not described
            out[name] = self.word()
        return out

    def array(self, schema: Schema, depth: int) -> list[Any]:
        prefix: list[Schema] = schema.get("prefixItems") or []
        items = schema.get("items")
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, schema.get("additionalItems")
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, len(prefix), 1 if depth >= _MAX_DEPTH else 3)))
        hi = max(hi, lo, 0)
        n = max(lo, len(prefix)) if depth >= _MAX_DEPTH else self.rng.randint(max(lo, 0), hi)
        n = max(n, min(len(prefix), hi))
        out: list[Any] = []
        unique = bool(schema.get("uniqueItems"))
        seen: set[bytes] = set()
        tries = 0
        while len(out) < n and tries < n * 10 + 10 and self.left > 0:
            tries += 1
            idx = len(out)
            sub = prefix[idx] if idx < len(prefix) else items if isinstance(items, dict) else {}
            val = self.value(sub, depth + 1)
            if unique:
                key = _encoder.encode(val)
                if key in seen:
                    continue
                seen.add(key)
            out.append(val)
        return out

    def integer(self, schema: Schema) -> int:
        lo, hi = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            if first <= last:
                return max(-_INT64, min(_INT64, int(self.rng.randint(first, last) * step)))
        # JSON numbers beyond 64 bits are refused by most decoders (ours included).
        lo, hi = max(-_INT64, min(_INT64, int(lo))), max(-_INT64, min(_INT64, int(hi)))
        return self.rng.randint(lo, max(lo, hi))

    def number(self, schema: Schema) -> float:
        lo, hi = _bounds(schema, integer=False)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            if first <= last:
                return float(self.rng.randint(first, last) * step)
        value = round(self.rng.uniform(lo, hi), 3)
        return value if lo <= value <= hi else lo

    def string(self, schema: Schema) -> str:
        fmt = schema.get("format")
        text = self._formatted(fmt) if isinstance(fmt, str) else None
        if text is None:
            text = self.word()
        lo = min(int(schema.get("minLength", 0)), _MAX_TEXT)
        hi = max(0, int(schema.get("maxLength", max(lo, len(text)))))
        if len(text) < lo:
            text = (text + "x" * lo)[:lo]
        return text[:hi]

    def word(self) -> str:
        return f"{self.rng.choice(_WORDS)}-{self.rng.randint(1, 999)}"

    def _formatted(self, fmt: str) -> str | None:
        rng = self.rng
        moment = _EPOCH + datetime.timedelta(seconds=rng.randint(0, 3 * 365 * 86400))
        match fmt:
            case "date-time":
                return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
            case "date":
                return moment.strftime("%Y-%m-%d")
            case "time":
                return moment.strftime("%H:%M:%SZ")
            case "duration":
                return f"PT{rng.randint(1, 59)}M"
            case "uuid":
                return str(uuid.UUID(int=rng.getrandbits(128), version=4))
            case "email":
                return f"{self.word()}@example.com"
            case "uri" | "url" | "iri":
                return f"https://example.com/{self.word()}"
            case "hostname":
                return f"{rng.choice(_WORDS)}.example.com"
            case "ipv4":
                return ".".join(str(rng.randint(1, 254)) for _ in range(4))
            case "ipv6":
                return ":".join(f"{rng.getrandbits(16):x}" for _ in range(8))
        return None


def _infer_type(schema: Schema) -> str:
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _bounds(schema: Schema, *, integer: bool) -> tuple[float, float]:
    nudge = 1 if integer else 0.001
    lo: float | None = schema.get("minimum")
    hi: float | None = schema.get("maximum")
    ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(ex_lo, bool):  # draft 4: a flag on minimum
        lo = lo + nudge if ex_lo and lo is not None else lo
    elif isinstance(ex_lo, int | float):
        lo = ex_lo + nudge if lo is None else max(lo, ex_lo + nudge)
    if isinstance(ex_hi, bool):
        hi = hi - nudge if ex_hi and hi is not None else hi
    elif isinstance(ex_hi, int | float):
        hi = ex_hi - nudge if hi is None else min(hi, ex_hi - nudge)
    if lo is None:
        lo = 0 if hi is None or hi >= 100 else hi - 100
    if hi is None:
        hi = lo + 100
    # Finite, whatever the schema says (1e999 decodes as inf).
    lo, hi = max(-1e300, min(1e300, float(lo))), max(-1e300, min(1e300, float(hi)))
    if integer:
        lo, hi = math.ceil(lo), math.floor(hi)
    return lo, max(lo, hi)


def _merge(a: Schema, b: Schema) -> Schema:
    out = {**a, **b}
    if "properties" in a and "properties" in b:
        out["properties"] = {**a["properties"], **b["properties"]}
    if "required" in a and "required" in b:
        out["required"] = sorted({*a["required"], *b["required"]})
    return out
