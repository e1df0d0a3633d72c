"""``@tool``: a Python function becomes a function tool the model can call.

The name, description and parameter schema come from the function: its ``__name__``, its
docstring (Google, NumPy or Sphinx style; the summary and free text describe the tool, parameter
docs describe the properties) and its type hints (see ``orchestrator.tools.schema``). Registration
fails at decoration time, naming function and parameter, for anything the model could not call.

Extra argument keys the model invents are ignored for ordinary tools and rejected as invalid
arguments for ``strict`` tools. ``None`` returns the empty output; a ``str`` is sent as is;
anything else msgspec can encode (Structs, dataclasses, dicts, lists, datetimes, UUIDs,
enums..., and pydantic models when pydantic is installed) is sent as JSON; a return annotation
that could not be is refused at decoration. Registering a function again under its name (a
module reloaded, a notebook cell run twice: same module and qualified name) replaces it; a
``functools.partial`` needs ``name=``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import logging
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final, Generic, Literal, ParamSpec, TypeVar, overload

import anyio
import msgspec

from orchestrator import errors
from orchestrator.protocols.assistants import models
from orchestrator.tools import docstrings, pydantic_types, schema

__all__ = [
    "NAME_PATTERN",
    "OnError",
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "default_registry",
    "encode_output",
    "import_tool_modules",
    "tool",
    "truncate",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: What a failed call does: ``output`` tells the model, ``raise`` cancels the run.
OnError = Literal["output", "raise"]
#: Function names the API accepts.
NAME_PATTERN: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_encoder: Final = msgspec.json.Encoder(enc_hook=pydantic_types.enc_hook)


class ToolContext(msgspec.Struct, frozen=True, kw_only=True):
    """Where a tool call comes from; declare a parameter of this type to receive it."""

    run_id: str
    thread_id: str
    tool_call_id: str
    tool_name: str
    #: Absolute Unix time (``time.time()``) by which the tool must finish; None: no limit.
    deadline: float | None
    #: 1 on the first attempt at this tool call; more when a resumed worker runs it again.
    attempt: int = 1

    @property
    def remaining(self) -> float | None:
        """Seconds left before ``deadline`` (negative once past), None without a deadline."""
        return None if self.deadline is None else self.deadline - time.time()


class Tool(Generic[P, R]):
    """A registered tool; calling it calls the plain function."""

    fn: Callable[P, R]
    __name__: str  # set, like __doc__ and __wrapped__, by functools.update_wrapper
    name: str
    description: str | None
    strict: bool
    #: Seconds one call may take; None: ``tools.timeout`` from the config.
    timeout: float | None
    #: None: ``tools.on_error`` from the config.
    on_error: OnError | None
    is_async: bool
    #: How arguments are described, decoded and passed.
    arguments: schema.Arguments

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
        timeout: float | None = None,
        on_error: OnError | None = None,
    ) -> None:
        if isinstance(fn, Tool):  # @tool applied twice, or a Tool re-registered
            fn = fn.fn
        functools.update_wrapper(self, fn)
        self.fn = fn
        qualname = _qualname(fn)
        if name is None and isinstance(fn, functools.partial):
            raise errors.ToolDefinitionError(
                f"{qualname}: a functools.partial has no name of its own; pass name="
            )
        self.name = name if name is not None else getattr(fn, "__name__", "")
        if not NAME_PATTERN.fullmatch(self.name):
            raise errors.ToolDefinitionError(
                f"{qualname}: tool name {self.name!r} must match ^[a-zA-Z0-9_-]{{1,64}}$"
            )
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise errors.ToolDefinitionError(f"{qualname}: timeout must be > 0, got {timeout!r}")
        if on_error not in (None, "output", "raise"):
            raise errors.ToolDefinitionError(
                f"{qualname}: on_error must be 'output' or 'raise', got {on_error!r}"
            )
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise errors.ToolDefinitionError(f"{qualname}: generators cannot be tools")
        doc = docstrings.parse(inspect.getdoc(schema.unwrap_partial(fn)))
        self.description = description or doc.description or None
        self.strict = strict
        self.timeout = timeout
        self.on_error = on_error
        self.is_async = _is_async(fn)
        self.arguments = schema.build(
            fn, tool_name=self.name, strict=strict, param_docs=doc.params, context_type=ToolContext
        )

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON Schema of the arguments (a copy)."""
        return copy.deepcopy(self.arguments.schema)

    @property
    def definition(self) -> models.ToolDefinition:
        """The function tool definition for an assistant or a run."""
        return models.ToolDefinition.for_function(
            models.FunctionDefinition(
                name=self.name,
                description=self.description,
                parameters=self.parameters,
                strict=True if self.strict else None,
            )
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name!r} strict={self.strict} async={self.is_async}>"

    def decode_arguments(self, arguments: str | bytes) -> msgspec.Struct:
        """Decode and validate the model's JSON text (empty: no arguments).

        Raises ``msgspec.ValidationError`` when the shape is wrong, ``msgspec.DecodeError``
        when the text is not JSON.
        """
        return self.arguments.decode(arguments)

    async def invoke(
        self,
        values: msgspec.Struct,
        context: ToolContext,
        *,
        run_sync: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None,
    ) -> Any:
        """Run the function with decoded arguments: awaited, or in a worker thread if sync.

        A sync function is abandoned when the call is cancelled: its thread runs on.
        ``run_sync`` runs a sync body (default: an anyio worker thread).
        """
        args, kwargs = self.arguments.bind(values, context)
        fn: Callable[..., Any] = self.fn
        if self.is_async:
            return await fn(*args, **kwargs)
        body = functools.partial(fn, *args, **kwargs)
        if run_sync is not None:
            result = await run_sync(body)
        else:
            result = await anyio.to_thread.run_sync(body, abandon_on_cancel=True)
        if inspect.isawaitable(result):  # a sync wrapper handing back a coroutine
            return await result
        return result


class ToolRegistry:
    """A set of tools with unique names."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool[..., Any]] = {}

    @overload
    def tool(self, fn: Callable[P, R], /) -> Tool[P, R]: ...

    @overload
    def tool(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
        timeout: float | None = None,
        on_error: OnError | None = None,
    ) -> Callable[[Callable[P, R]], Tool[P, R]]: ...

    def tool(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
        timeout: float | None = None,
        on_error: OnError | None = None,
    ) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
        """Decorator registering a function here, bare (``@r.tool``) or with options."""

        def decorate(func: Callable[P, R]) -> Tool[P, R]:
            return self.register(
                Tool(
                    func,
                    name=name,
                    description=description,
                    strict=strict,
                    timeout=timeout,
                    on_error=on_error,
                )
            )

        return decorate if fn is None else decorate(fn)

    def register(
        self,
        tool_or_fn: Tool[P, R] | Callable[P, R],
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        strict: bool = False,
        timeout: float | None = None,
        on_error: OnError | None = None,
    ) -> Tool[P, R]:
        """Add a Tool as it is, or a function (or a Tool's function) with these options."""
        options = (name, description, strict, timeout, on_error) != (None, None, False, None, None)
        if isinstance(tool_or_fn, Tool) and not options:
            new: Tool[P, R] = tool_or_fn
        else:
            fn = tool_or_fn.fn if isinstance(tool_or_fn, Tool) else tool_or_fn
            new = Tool(
                fn,
                name=name,
                description=description,
                strict=strict,
                timeout=timeout,
                on_error=on_error,
            )
        existing = self._tools.get(new.name)
        if existing is None or existing is new:
            pass
        elif _qualname(existing.fn) == _qualname(new.fn):
            # the same function defined again (module reload, a notebook cell run twice)
            logger.debug("tool %r replaced by its new definition", new.name)
        else:
            raise errors.ToolDefinitionError(
                f"tool name {new.name!r} is registered twice: by {_qualname(existing.fn)} "
                f"and by {_qualname(new.fn)}; pass name= to tell them apart"
            )
        self._tools[new.name] = new
        return new

    def get(self, name: str) -> Tool[..., Any] | None:
        """The tool called ``name``, if registered."""
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool[..., Any]]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"<ToolRegistry {sorted(self._tools)}>"

    def definitions(self) -> list[models.ToolDefinition]:
        """Function tool definitions of every tool, in registration order."""
        return [t.definition for t in self._tools.values()]


#: Where ``@tool`` registers unless told otherwise; the modules in ``tools.modules`` fill it.
default_registry: Final = ToolRegistry()


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
    timeout: float | None = None,
    on_error: OnError | None = None,
    registry: ToolRegistry | None = None,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
    timeout: float | None = None,
    on_error: OnError | None = None,
    registry: ToolRegistry | None = None,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Register a function as a tool on ``registry`` (default: ``default_registry``).

    Usable bare (``@tool``) or with options (``@tool(name=..., strict=True, timeout=5)``).
    """
    target = default_registry if registry is None else registry
    if fn is not None:
        return target.tool(fn)
    return target.tool(
        name=name, description=description, strict=strict, timeout=timeout, on_error=on_error
    )


def import_tool_modules(modules: Sequence[str]) -> None:
    """Import the modules of ``tools.modules`` so that their ``@tool`` functions register.

    The working directory goes on the import path first (as uvicorn and celery do), so a
    ``mytools.py`` next to config.yaml is found. Any failure is a one-line ConfigError.
    """
    if modules and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        if not isinstance(module, str) or not all(p.isidentifier() for p in module.split(".")):
            raise errors.ConfigError(f"tools.modules: {module!r} is not a module name")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise errors.ConfigError(f"tools.modules: cannot import {module!r}: {exc}") from exc
        except errors.ToolDefinitionError as exc:
            raise errors.ConfigError(f"tools.modules: {module!r}: {exc}") from exc
        except Exception as exc:  # the module's own code failed while importing
            raise errors.ConfigError(
                f"tools.modules: importing {module!r} raised {type(exc).__name__}: {exc}"
            ) from exc


def encode_output(value: object) -> str:
    """A tool's return value as the output string; raises TypeError for unencodable values."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str.__str__(value)  # the text itself, even for str-based enums
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    try:
        return _encoder.encode(value).decode("utf-8")
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"the return value ({type(value).__name__}) is not JSON: {exc}") from exc


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…[truncated N chars]``."""
    if len(text) <= limit:
        return text
    # size the marker for the longest count it can show, so the result never exceeds limit
    keep = limit - len(f"…[truncated {len(text)} chars]")
    if keep <= 0:
        return text[:limit]
    return f"{text[:keep]}…[truncated {len(text) - keep} chars]"


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or (
        not inspect.isroutine(fn) and inspect.iscoroutinefunction(fn.__call__)
    )


def _qualname(fn: Callable[..., Any]) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_qualname(fn.func)})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
