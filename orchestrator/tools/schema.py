"""A tool function's signature → one msgspec Struct → its JSON Schema and its argument decoder.

The Struct built from the parameters is the single source of truth: ``msgspec.json.schema``
describes it for the model and ``msgspec.json.Decoder`` validates the model's arguments with it.
The schema is then made self-contained (``$ref``s inlined; only recursive types keep ``$defs``)
and, for ``strict`` tools, reshaped for OpenAI's Structured Outputs subset (see
``orchestrator.tools.schema_rewrite``).
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Union

import msgspec

from orchestrator import errors
from orchestrator.tools import pydantic_types, schema_rewrite

__all__ = ["Arguments", "build", "unwrap_partial"]

_EMPTY: Final = inspect.Parameter.empty


@dataclass(frozen=True, eq=False)
class Arguments:
    """How a tool's arguments are described, decoded and passed to its function."""

    #: The Struct with one field per parameter (the context parameter excluded).
    struct: type[msgspec.Struct]
    #: The ``parameters`` JSON Schema of the function definition.
    schema: dict[str, Any]
    #: Parameter names in signature order, the context parameter included.
    names: tuple[str, ...]
    #: Names that must be passed positionally.
    positional_only: frozenset[str]
    #: The parameter that receives the ToolContext, if any.
    context: str | None
    #: Strict tools: parameters whose ``null`` stands for their Python default.
    null_defaults: Mapping[str, Any]
    decoder: msgspec.json.Decoder[Any]

    def decode(self, arguments: str | bytes) -> msgspec.Struct:
        """Decode the model's JSON text; an empty string means no arguments.

        Raises ``msgspec.ValidationError`` (wrong shape) or ``msgspec.DecodeError`` (not JSON).
        """
        decoded: msgspec.Struct = self.decoder.decode(arguments if arguments.strip() else b"{}")
        return decoded

    def bind(self, values: msgspec.Struct, context: object) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for the call."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name in self.names:
            if name == self.context:
                value = context
            else:
                value = getattr(values, name)
                if value is None and name in self.null_defaults:
                    value = self.null_defaults[name]
            if name in self.positional_only:
                args.append(value)
            else:
                kwargs[name] = value
        return args, kwargs


def build(
    fn: Callable[..., Any],
    *,
    tool_name: str,
    strict: bool,
    param_docs: Mapping[str, str],
    context_type: type,
) -> Arguments:
    """Analyse ``fn``'s signature; raise ``ToolDefinitionError`` naming what is unsupported."""
    where = f"tool {tool_name!r} ({_qualname(fn)})"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise errors.ToolDefinitionError(f"{where}: cannot read its signature: {exc}") from exc
    try:
        hints = typing.get_type_hints(unwrap_partial(fn), include_extras=True)
    except Exception as exc:
        raise errors.ToolDefinitionError(
            f"{where}: cannot resolve its type hints ({type(exc).__name__}: {exc}); "
            "define the types at module level"
        ) from exc

    fields: list[tuple[str, Any, Any]] = []
    names: list[str] = []
    positional_only: set[str] = set()
    context: str | None = None
    null_defaults: dict[str, Any] = {}
    for param in signature.parameters.values():
        what = f"{where}: parameter {param.name!r}"
        if param.kind is param.VAR_POSITIONAL:
            raise errors.ToolDefinitionError(f"{what}: *args is not supported; name each argument")
        if param.kind is param.VAR_KEYWORD:
            raise errors.ToolDefinitionError(
                f"{what}: **kwargs is not supported; name each argument"
            )
        if param.name not in hints:
            raise errors.ToolDefinitionError(f"{what}: has no type annotation")
        hint = hints[param.name]
        names.append(param.name)
        if param.kind is param.POSITIONAL_ONLY:
            positional_only.add(param.name)
        if _is_context(hint, context_type):
            if context is not None:
                raise errors.ToolDefinitionError(f"{what}: only one ToolContext parameter allowed")
            context = param.name
            continue
        _check_type(hint, what)
        if param.default is _EMPTY:
            fields.append((param.name, hint, msgspec.NODEFAULT))
        elif strict and not _accepts_none(hint):
            # strict mode makes every property required; null is how the model asks for the default
            null_defaults[param.name] = param.default
            fields.append((param.name, hint | None, None))
        else:
            fields.append((param.name, hint, _default(param.default)))
    if "return" in hints:
        _check_return(hints["return"], where)

    args_type = msgspec.defstruct(
        f"{tool_name}_arguments",
        fields,
        kw_only=True,
        forbid_unknown_fields=strict,
        module=getattr(fn, "__module__", None),
    )
    try:
        raw = msgspec.json.schema_components(
            [args_type], ref_template="#/$defs/{name}", schema_hook=pydantic_types.schema_hook
        )[1]
    except (TypeError, ValueError) as exc:
        raise errors.ToolDefinitionError(
            f"{where}: no JSON Schema for its arguments: {exc}"
        ) from exc
    schema = schema_rewrite.inline(raw, args_type.__name__)
    schema.pop("title", None)
    _describe(schema, param_docs, null_defaults)
    if strict:
        try:
            schema = schema_rewrite.strict(schema)
        except schema_rewrite.UnsupportedSchema as exc:
            raise errors.ToolDefinitionError(f"{where}: not valid in strict mode: {exc}") from exc
    return Arguments(
        struct=args_type,
        schema=schema,
        names=tuple(names),
        positional_only=frozenset(positional_only),
        context=context,
        null_defaults=null_defaults,
        decoder=msgspec.json.Decoder(args_type, dec_hook=pydantic_types.dec_hook),
    )


def _qualname(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def _strip_annotated(hint: Any) -> Any:
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    return typing.get_args(hint) if origin is Union or origin is types.UnionType else None


def _is_context(hint: Any, context_type: type) -> bool:
    hint = _strip_annotated(hint)
    if hint is context_type:
        return True
    members = _union_args(hint)
    return (
        members is not None
        and context_type in members
        and set(members)
        <= {
            context_type,
            type(None),
        }
    )


def _accepts_none(hint: Any) -> bool:
    hint = _strip_annotated(hint)
    if hint is None or hint is type(None) or hint is Any:
        return True
    members = _union_args(hint)
    if members is not None:
        return any(_accepts_none(m) for m in members)
    if typing.get_origin(hint) is Literal:
        return None in typing.get_args(hint)
    return False


def _check_type(hint: Any, what: str) -> None:
    """Fail at decoration, naming the parameter, for a type msgspec cannot handle."""
    try:
        msgspec.json.Decoder(hint, dec_hook=pydantic_types.dec_hook)
        msgspec.json.schema(hint, schema_hook=pydantic_types.schema_hook)
    except (TypeError, ValueError) as exc:
        raise errors.ToolDefinitionError(f"{what}: unsupported type {hint!r}: {exc}") from exc


_ANY_RESULT: Final = (None, type(None), Any, object, typing.NoReturn, typing.Never)
_AWAITABLES: Final = (Awaitable, Coroutine)


def _check_return(hint: Any, where: str) -> None:
    """Fail at decoration for a return annotation whose values could not be sent as JSON."""
    hint = _strip_annotated(hint)
    if hint in _ANY_RESULT or typing.get_origin(hint) in _AWAITABLES:
        return  # nothing to check before the call (a sync wrapper's awaitable: at run time)
    try:
        msgspec.json.schema(hint, schema_hook=pydantic_types.schema_hook)
    except (TypeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise errors.ToolDefinitionError(
            f"{where}: its return type {hint!r} cannot be encoded as the output ({reason}); "
            "return str, None, or a type msgspec encodes (Struct, dataclass, dict, list...)"
        ) from exc


def unwrap_partial(fn: Any) -> Any:
    """The function under ``functools.partial`` layers: it holds the type hints."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _default(value: Any) -> Any:
    if isinstance(value, list | dict | set | bytearray) and value:
        # msgspec refuses non-empty mutable defaults; each call gets its own copy
        return msgspec.field(default_factory=functools.partial(copy.deepcopy, value))
    return value


def _describe(
    schema: dict[str, Any], param_docs: Mapping[str, str], null_defaults: Mapping[str, Any]
) -> None:
    """Docstring text onto the top-level properties (a ``Meta(description=...)`` wins)."""
    properties: dict[str, dict[str, Any]] = schema.get("properties", {})
    for name, prop in properties.items():
        doc = param_docs.get(name)
        if doc and "description" not in prop:
            prop["description"] = doc
        if name in null_defaults:
            prop.pop("default", None)  # the Struct's default is the null placeholder
            try:
                shown = msgspec.json.encode(null_defaults[name]).decode("utf-8")
            except TypeError:
                shown = repr(null_defaults[name])
            note = f"null means the default, {shown}."
            prop["description"] = f"{prop['description']} {note}" if "description" in prop else note
