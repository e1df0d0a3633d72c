"""@tool, Tool and ToolRegistry: registration, decoration-time errors, outputs."""

import dataclasses
import datetime as dt
import enum
import sys
import threading
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from orchestrator import errors, tools
from orchestrator.protocols.assistants import models


class Level(enum.StrEnum):
    LOW = "low"


class Pair(msgspec.Struct):
    a: int
    b: str


@dataclasses.dataclass
class Row:
    id: int
    name: str


class NotJSON:
    pass


# --- the decorator ----------------------------------------------------------------------------


def test_bare_decorator_registers_and_stays_callable() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def add(a: int, b: int = 1) -> int:
        """Add."""
        return a + b

    assert isinstance(add, tools.Tool)
    assert add(2, b=3) == 5
    assert add.__name__ == "add"
    assert add.__doc__ == "Add."
    assert registry.get("add") is add
    assert "add" in registry
    assert len(registry) == 1
    assert add.is_async is False


@pytest.mark.anyio
async def test_decorator_with_options_on_an_async_function() -> None:
    registry = tools.ToolRegistry()

    @tools.tool(name="twice", description="Double it.", strict=True, timeout=2.5,
                on_error="raise", registry=registry)  # fmt: skip
    async def double(x: int) -> int:
        return 2 * x

    assert await double(4) == 8
    assert double.is_async is True
    assert (double.name, double.description, double.strict) == ("twice", "Double it.", True)
    assert (double.timeout, double.on_error) == (2.5, "raise")
    assert registry.get("twice") is double
    assert "double" not in registry


def test_module_level_tool_uses_the_default_registry() -> None:
    @tools.tool(name="test_tools_default_registry_probe")
    def probe() -> str:
        return "ok"

    assert tools.default_registry.get("test_tools_default_registry_probe") is probe


def test_decorating_twice_wraps_the_original_function() -> None:
    registry = tools.ToolRegistry()

    def f(a: int) -> int:
        return a

    once = tools.Tool(f)
    twice = registry.tool(once)
    assert twice.fn is f
    assert twice(3) == 3


def test_definition() -> None:
    def echo(text: str) -> str:
        """Repeat the text."""
        return text

    plain = tools.Tool(echo)
    definition = plain.definition
    assert definition.type == "function"
    assert definition.function == models.FunctionDefinition(
        name="echo",
        description="Repeat the text.",
        parameters={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    )
    assert b'"strict"' not in models.encode(definition)
    strict_fn = tools.Tool(echo, strict=True).definition.function
    assert strict_fn is not None
    assert strict_fn.strict is True
    # the schema handed out is a copy: changing it changes nothing
    assert definition.function is not None
    assert definition.function.parameters is not None
    definition.function.parameters["properties"].clear()
    assert plain.parameters["properties"] == {"text": {"type": "string"}}


# --- the registry -----------------------------------------------------------------------------


def test_registry_iteration_order_and_definitions() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def b() -> None: ...

    @registry.tool
    def a() -> None: ...

    assert [t.name for t in registry] == ["b", "a"]
    assert [d.function.name for d in registry.definitions() if d.function] == ["b", "a"]
    assert registry.get("missing") is None
    assert "missing" not in registry
    assert 42 not in registry


def test_duplicate_names_raise_naming_both_functions() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def same() -> None: ...

    registry.register(same)  # the very same tool again: a no-op

    def other() -> None: ...

    with pytest.raises(errors.ToolDefinitionError, match=r"'same' is registered twice.*other"):
        registry.register(other, name="same")
    assert len(registry) == 1


def test_register_a_tool_again_under_other_options() -> None:
    first, second = tools.ToolRegistry(), tools.ToolRegistry()

    @first.tool
    def greet(name: str) -> str:
        return f"hello {name}"

    alias = second.register(greet, name="hello", strict=True)
    assert alias is not greet
    assert alias.fn is greet.fn
    assert alias.strict is True
    assert second.register(greet) is greet  # as it is when no option is given


# --- decoration-time errors -------------------------------------------------------------------


def star_args(*values: int) -> None: ...


def star_kwargs(**options: int) -> None: ...


def unannotated(x, y: int) -> None:  # type: ignore[no-untyped-def]
    ...


def unresolvable(x: "NoSuchType") -> None: ...  # type: ignore[name-defined]  # noqa: F821


def unsupported(x: NotJSON) -> None: ...


def generator(x: int) -> Generator[int, None, None]:
    yield x


@pytest.mark.parametrize(
    ("fn", "complaint"),
    [
        (star_args, r"tool 'star_args' .*test_tools\.star_args.*parameter 'values'.*\*args"),
        (star_kwargs, r"tool 'star_kwargs' .*parameter 'options'.*\*\*kwargs"),
        (unannotated, r"tool 'unannotated' .*parameter 'x': has no type annotation"),
        (unresolvable, r"tool 'unresolvable' .*cannot resolve its type hints.*NoSuchType"),
        (unsupported, r"tool 'unsupported' .*parameter 'x': unsupported type .*NotJSON"),
        (generator, r"test_tools\.generator: generators cannot be tools"),
    ],
)
def test_unsupported_signatures(fn: Any, complaint: str) -> None:
    with pytest.raises(errors.ToolDefinitionError, match=complaint):
        tools.ToolRegistry().tool(fn)


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dot.ted", "ünïcode"])
def test_bad_names(name: str) -> None:
    def f() -> None: ...

    with pytest.raises(errors.ToolDefinitionError, match=r"test_tools\..*f: tool name"):
        tools.Tool(f, name=name)


def test_lambda_needs_a_name() -> None:
    with pytest.raises(errors.ToolDefinitionError, match="<lambda>"):
        tools.Tool(lambda: None)
    assert tools.Tool(lambda: None, name="noop").name == "noop"


def test_names_at_the_limits_are_accepted() -> None:
    def f() -> None: ...

    for name in ("x" * 64, "a-b_C9", "0"):
        assert tools.Tool(f, name=name).name == name


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan")])
def test_bad_timeout(timeout: float) -> None:
    def f() -> None: ...

    with pytest.raises(errors.ToolDefinitionError, match="timeout must be > 0"):
        tools.Tool(f, timeout=timeout)


def test_bad_on_error() -> None:
    def f() -> None: ...

    with pytest.raises(errors.ToolDefinitionError, match="on_error must be"):
        tools.Tool(f, on_error="ignore")  # type: ignore[arg-type]


def test_two_context_parameters() -> None:
    def f(a: tools.ToolContext, b: tools.ToolContext) -> None: ...

    with pytest.raises(errors.ToolDefinitionError, match="parameter 'b': only one ToolContext"):
        tools.Tool(f)


# --- arguments --------------------------------------------------------------------------------


def test_positional_only_and_keyword_only_parameters_are_bound_right() -> None:
    def f(a: int, /, b: int, *, c: int = 3) -> tuple[int, int, int]:
        return (a, b, c)

    t = tools.Tool(f)
    values = t.decode_arguments('{"a": 1, "b": 2}')
    args, kwargs = t.arguments.bind(values, None)
    assert (args, kwargs) == ([1], {"b": 2, "c": 3})
    assert f(*args, **kwargs) == (1, 2, 3)


def test_empty_arguments_mean_no_arguments() -> None:
    def f(a: int = 5) -> int:
        return a

    t = tools.Tool(f)
    for text in ("", "  ", "{}"):
        assert t.arguments.bind(t.decode_arguments(text), None) == ([], {"a": 5})


def test_mutable_defaults_are_copied_per_call() -> None:
    def f(xs: list[int] = [1, 2]) -> list[int]:  # noqa: B006
        return xs

    t = tools.Tool(f)
    first = t.decode_arguments("{}")
    getattr(first, "xs").append(3)  # noqa: B009
    assert getattr(t.decode_arguments("{}"), "xs") == [1, 2]  # noqa: B009


def test_decode_errors() -> None:
    def f(days: int) -> None: ...

    t = tools.Tool(f)
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int`, got `str` - at `\$.days`"):
        t.decode_arguments('{"days": "three"}')
    with pytest.raises(msgspec.ValidationError, match="missing required field `days`"):
        t.decode_arguments("{}")
    with pytest.raises(msgspec.ValidationError, match="Expected `object`, got `array`"):
        t.decode_arguments("[1]")
    with pytest.raises(msgspec.DecodeError) as info:
        t.decode_arguments('{"days": 1')
    assert not isinstance(info.value, msgspec.ValidationError)


# --- ToolContext ------------------------------------------------------------------------------


def context(deadline: float | None) -> tools.ToolContext:
    return tools.ToolContext(
        run_id="r", thread_id="t", tool_call_id="c", tool_name="n", deadline=deadline
    )


def test_context_remaining() -> None:
    assert context(None).remaining is None
    remaining = context(time.time() + 100).remaining
    assert remaining is not None
    assert 0 < remaining <= 100
    past = context(time.time() - 1).remaining
    assert past is not None
    assert past < 0
    assert context(None).attempt == 1


# --- outputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain text", "plain text"),
        ("", ""),
        (None, ""),
        (Level.LOW, "low"),
        ("héllo ✓ 日本", "héllo ✓ 日本"),
        (b"bytes \xc3\xa9", "bytes é"),
        (42, "42"),
        (1.5, "1.5"),
        (True, "true"),
        ({"a": [1, None]}, '{"a":[1,null]}'),
        ([1, "x"], '[1,"x"]'),
        ((1, 2), "[1,2]"),
        (Pair(1, "x"), '{"a":1,"b":"x"}'),
        (Row(1, "n"), '{"id":1,"name":"n"}'),
        (dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC), '"2024-05-01T09:30:00Z"'),
        (dt.date(2024, 5, 1), '"2024-05-01"'),
        (uuid.UUID(int=1), '"00000000-0000-0000-0000-000000000001"'),
        ({"level": Level.LOW}, '{"level":"low"}'),
        ({"text": "日本"}, '{"text":"日本"}'),
    ],
)
def test_encode_output(value: object, expected: str) -> None:
    assert tools.encode_output(value) == expected


def test_encode_output_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError, match=r"return value \(NotJSON\) is not JSON"):
        tools.encode_output(NotJSON())


def test_truncate() -> None:
    assert tools.truncate("short", 10) == "short"
    assert tools.truncate("x" * 100, 100) == "x" * 100
    cut = tools.truncate("x" * 100_000, 1_000)
    assert len(cut) <= 1_000
    kept = cut.index("…")
    assert cut == "x" * kept + f"…[truncated {100_000 - kept} chars]"
    assert kept > 950


def test_truncate_counts_characters_not_bytes() -> None:
    text = "日本語🙂" * 1_000  # 4,000 characters, 13,000 UTF-8 bytes
    cut = tools.truncate(text, 500)
    assert len(cut) <= 500
    kept = cut.index("…[")
    assert cut[:kept] == text[:kept]
    assert cut.endswith(f"…[truncated {4_000 - kept} chars]")
    cut.encode("utf-8")  # no half characters


def test_truncate_with_no_room_for_the_marker() -> None:
    assert tools.truncate("abcdefghij" * 10, 5) == "abcde"


# --- modules from config ----------------------------------------------------------------------


def test_import_tool_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_test_tools_mod.py").write_text(
        "from orchestrator import tools\n"
        "registry = tools.ToolRegistry()\n"
        "@registry.tool\n"
        "def ping() -> str:\n"
        "    return 'pong'\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_test_tools_mod", raising=False)
    tools.import_tool_modules(["my_test_tools_mod", "handlers"])
    assert "ping" in sys.modules["my_test_tools_mod"].registry
    assert "calculate" in tools.default_registry


def test_import_tool_modules_names_the_missing_module() -> None:
    with pytest.raises(errors.ConfigError, match=r"tools.modules: cannot import 'no_such_mod_x'"):
        tools.import_tool_modules(["handlers", "no_such_mod_x"])


def test_tool_invoke_runs_sync_functions_off_the_loop() -> None:
    def where() -> int:
        return threading.get_ident()

    async def main() -> int:
        t = tools.Tool(where)
        result: int = await t.invoke(t.decode_arguments("{}"), context(None))
        return result

    assert anyio.run(main) != threading.get_ident()
