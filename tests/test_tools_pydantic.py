"""Pydantic models as tool parameters and results; re-registration; partials; return types."""

from __future__ import annotations

import functools
import importlib
import json
import sys
import textwrap
from pathlib import Path

import msgspec
import pydantic
import pytest

from orchestrator import Orchestrator, ToolRegistry, errors, testing, tools
from orchestrator.tools import ToolContext


class Address(pydantic.BaseModel):
    street: str
    city: str = "Paris"


class Order(pydantic.BaseModel):
    """An order to place."""

    item: str = pydantic.Field(description="What to buy.")
    quantity: int = pydantic.Field(ge=1)
    ship_to: Address


class Receipt(pydantic.BaseModel):
    order_id: str
    total: float


class NotJSON:
    pass


@pytest.fixture
def tool_registry() -> ToolRegistry:
    return ToolRegistry()


def context() -> ToolContext:
    return ToolContext(run_id="r", thread_id="t", tool_call_id="c", tool_name="x", deadline=None)


# --- pydantic ---------------------------------------------------------------------------------


def test_a_model_parameter_is_described_by_its_own_schema() -> None:
    @tools.tool(registry=tools.ToolRegistry())
    def place(order: Order, note: str | None = None) -> Receipt:
        """Place an order."""
        return Receipt(order_id="o1", total=1.0)

    order = place.parameters["properties"]["order"]
    assert order["properties"]["item"]["description"] == "What to buy."
    assert order["properties"]["quantity"]["minimum"] == 1
    # the nested model is inlined: the schema stands alone, as a function definition must
    assert order["properties"]["ship_to"]["properties"]["street"] == {
        "title": "Street",
        "type": "string",
    }
    assert "$defs" not in json.dumps(place.parameters)
    assert place.parameters["required"] == ["order"]


@pytest.mark.anyio
async def test_model_arguments_are_validated_and_results_encoded() -> None:
    seen: list[Order] = []

    @tools.tool(registry=tools.ToolRegistry())
    async def place(order: Order) -> Receipt:
        """Place an order."""
        seen.append(order)
        return Receipt(order_id="o1", total=2.5 * order.quantity)

    values = place.decode_arguments(
        '{"order": {"item": "tea", "quantity": 2, "ship_to": {"street": "1 rue X"}}}'
    )
    result = await place.invoke(values, context())
    assert seen == [Order(item="tea", quantity=2, ship_to=Address(street="1 rue X"))]
    assert json.loads(tools.encode_output(result)) == {"order_id": "o1", "total": 5.0}


def test_invalid_model_arguments_are_a_validation_error_with_the_path() -> None:
    @tools.tool(registry=tools.ToolRegistry())
    def place(order: Order) -> None:
        """Place an order."""

    with pytest.raises(msgspec.ValidationError) as info:
        place.decode_arguments('{"order": {"item": "tea", "quantity": 0, "ship_to": {}}}')
    message = str(info.value)
    assert "quantity: Input should be greater than or equal to 1" in message
    assert "ship_to.street: Field required" in message
    assert "$.order" in message
    assert "errors.pydantic.dev" not in message  # one readable line for the model


def test_models_inside_containers_and_as_results() -> None:
    @tools.tool(registry=tools.ToolRegistry())
    def many(addresses: list[Address]) -> list[Receipt]:
        """Several."""
        return []

    values = many.decode_arguments('{"addresses": [{"street": "a"}, {"street": "b"}]}')
    assert [a.city for a in values.addresses] == ["Paris", "Paris"]  # type: ignore[attr-defined]
    assert tools.encode_output([Receipt(order_id="x", total=1)]) == '[{"order_id":"x","total":1.0}]'


async def test_the_emulator_makes_up_valid_arguments_for_model_parameters(
    orchestrator: Orchestrator,
) -> None:
    registry = orchestrator.registry

    @registry.tool
    def place(order: Order, addresses: list[Address]) -> Receipt:
        """Place an order."""
        return Receipt(order_id="o1", total=float(order.quantity))

    run = await testing.run_script(orchestrator)  # the tools called with synthesised arguments
    assert run.ok
    [[submitted]] = run.rounds
    assert submitted.error_type is None, submitted.output
    assert json.loads(submitted.output)["order_id"] == "o1"


# --- return annotations -----------------------------------------------------------------------


def test_a_return_type_that_cannot_be_encoded_fails_at_decoration() -> None:
    def lookup(key: str) -> NotJSON:
        return NotJSON()

    with pytest.raises(errors.ToolDefinitionError, match=r"'lookup'.*return type.*NotJSON"):
        tools.ToolRegistry().tool(lookup)

    def maybe(key: str) -> dict[str, NotJSON] | None:
        return None

    with pytest.raises(errors.ToolDefinitionError, match=r"'maybe'.*return type"):
        tools.ToolRegistry().tool(maybe)


def test_return_types_that_are_fine() -> None:
    registry = tools.ToolRegistry()

    def a() -> None: ...
    def b() -> str: return ""  # fmt: skip

    async def c() -> dict[str, list[int]]: return {}  # fmt: skip

    def d() -> bytes: return b""  # fmt: skip

    def e() -> Receipt: return Receipt(order_id="", total=0)  # fmt: skip

    def f(): ...  # type: ignore[no-untyped-def]  # unannotated: checked when it returns

    for fn in (a, b, c, d, e, f):
        registry.tool(fn)
    assert len(registry) == 6


# --- re-registration and partials -------------------------------------------------------------


def test_a_module_reloaded_replaces_its_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "reloaded_tools_mod.py"
    source = """
        from orchestrator import tool

        @tool(name="reloaded_probe")
        def probe() -> str:
            return "{}"
    """
    module.write_text(textwrap.dedent(source.format("v1")))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        mod = importlib.import_module("reloaded_tools_mod")
        first = tools.default_registry.get("reloaded_probe")
        module.write_text(textwrap.dedent(source.format("v2")))
        importlib.invalidate_caches()
        mod = importlib.reload(mod)  # no "registered twice" error
        second = tools.default_registry.get("reloaded_probe")
        assert second is mod.probe
        assert second is not first
        assert second is not None
        assert second() == "v2"
    finally:
        sys.modules.pop("reloaded_tools_mod", None)
        tools.default_registry._tools.pop("reloaded_probe", None)


def test_a_cell_run_twice_replaces_the_tool_but_other_functions_still_clash() -> None:
    registry = tools.ToolRegistry()
    namespace: dict[str, object] = {"registry": registry, "__name__": "__main__"}
    cell = "@registry.tool\ndef ask(q: str) -> str:\n    return q\n"
    exec(cell, namespace)
    exec(cell, namespace)  # the same cell again
    assert registry.get("ask") is namespace["ask"]
    assert len(registry) == 1

    def ask(q: str) -> str:  # same name, another function (this test module)
        return q

    with pytest.raises(errors.ToolDefinitionError, match="registered twice"):
        registry.register(ask)


def test_a_partial_asks_for_a_name_and_keeps_the_functions_doc() -> None:
    def convert(amount: float, currency: str) -> str:
        """Convert an amount.

        Args:
            amount: How much.
            currency: Into which currency.
        """
        return f"{amount} {currency}"

    to_euro = functools.partial(convert, currency="EUR")
    with pytest.raises(errors.ToolDefinitionError, match=r"functools\.partial.*pass name="):
        tools.ToolRegistry().tool(to_euro)

    t = tools.ToolRegistry().register(to_euro, name="to_euro")
    assert t.description == "Convert an amount."
    assert t.parameters["properties"]["amount"]["description"] == "How much."
    assert t.parameters["required"] == ["amount"]
    assert t(2.0) == "2.0 EUR"
