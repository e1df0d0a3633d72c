"""orchestrator.testing and its pytest plugin, used here as a project using them would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from orchestrator import Emulator, Orchestrator, ToolContext, ToolRegistry, events, testing
from orchestrator.testing import Script, call

registry = ToolRegistry()


@registry.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@registry.tool
async def greet(name: str, ctx: ToolContext) -> str:
    """Greet someone."""
    return f"hello {name} (attempt {ctx.attempt})"


@registry.tool
def explode() -> str:
    """Always fails."""
    raise RuntimeError("boom")


@pytest.fixture
def tool_registry() -> ToolRegistry:
    return registry


# --- the fixtures -----------------------------------------------------------------------------


async def test_fixtures_are_wired_together(
    emulator: Emulator, orchestrator: Orchestrator, tool_registry: ToolRegistry
) -> None:
    assert orchestrator.registry is tool_registry
    assert orchestrator.config.api.base_url == emulator.base_url
    assert emulator.base_url.startswith("http://127.0.0.1:")


async def test_a_script_over_several_rounds(orchestrator: Orchestrator) -> None:
    run = await testing.run_script(
        orchestrator,
        Script(
            call("add", a=2, b=3),
            [call("greet", name="Ada"), call("add", a=1, b=1)],
            reply="Greeted: {output:greet}",
        ),
    )
    assert run.ok
    assert run.result.rounds == 2
    run.assert_outputs(["5"], ["hello Ada (attempt 1)", 2])
    assert [[s.name for s in r] for r in run.rounds] == [["add"], ["greet", "add"]]
    assert msgspec.json.decode(run.rounds[1][0].arguments) == {"name": "Ada"}
    assert run.outputs("add") == ["5", "2"]
    assert run.reply == "Greeted: hello Ada (attempt 1)"
    assert isinstance(run.events[-1], events.RunFinished)


async def test_assert_outputs_says_what_was_submitted(orchestrator: Orchestrator) -> None:
    run = await testing.run_script(orchestrator, Script(call("add", a=2, b=2)))
    run.assert_outputs([4])
    run.assert_outputs(["4"])
    with pytest.raises(AssertionError, match=r"round 1: add -> '4'"):
        run.assert_outputs(["5"])
    with pytest.raises(AssertionError, match="submitted outputs differ"):
        run.assert_outputs(["4"], ["4"])


async def test_failures_are_outputs_with_their_error_type(orchestrator: Orchestrator) -> None:
    run = await testing.run_script(
        orchestrator,
        Script([call("explode"), testing.Call("add", raw="{not json"), call("add", a="x", b=1)]),
    )
    assert run.ok
    assert [s.error_type for s in run.rounds[0]] == [
        "tool_exception",
        "invalid_json",
        "invalid_arguments",
    ]
    assert "boom" in run.rounds[0][0].output


async def test_raw_rounds_and_run_parameters(orchestrator: Orchestrator) -> None:
    run = await testing.run_script(
        orchestrator, Script({"fail": "server_error"}), metadata={"case": "x"}
    )
    assert run.result.outcome == "failed"
    assert run.rounds == []
    metadata = run.result.run.metadata or {}
    assert metadata["case"] == "x"
    assert (
        metadata["emulator_script"]
        == Script({"fail": "server_error"}).metadata()["emulator_script"]
    )


async def test_without_a_script_every_tool_is_called_once(orchestrator: Orchestrator) -> None:
    run = await testing.run_script(orchestrator)
    assert run.ok
    assert [sorted(s.name for s in r) for r in run.rounds] == [["add", "explode", "greet"]]
    assert [s.error_type for s in run.rounds[0] if s.name != "explode"] == [None, None]


def test_script_rounds_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one round"):
        Script()
    with pytest.raises(TypeError, match="a round is"):
        Script([1])  # type: ignore[list-item]
    assert Script(reply="hi").metadata() == {"emulator_script": '[{"message": "hi"}]'}


# --- unit-testing a tool directly -------------------------------------------------------------


@pytest.mark.anyio
async def test_call_tool_decodes_like_a_run_and_passes_a_context() -> None:
    assert await testing.call_tool(add, {"a": 1, "b": 2}) == 3
    assert await testing.call_tool(add, '{"a": 1, "b": 2}') == 3
    ctx = testing.tool_context(attempt=3)
    assert await testing.call_tool(greet, {"name": "Bo"}, context=ctx) == "hello Bo (attempt 3)"
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int`, got `str` - at `\$.a`"):
        await testing.call_tool(add, {"a": "one", "b": 2})


def test_tool_context_defaults() -> None:
    ctx = testing.tool_context(tool_name="add")
    assert (ctx.run_id, ctx.tool_call_id, ctx.tool_name, ctx.attempt) == (
        "run_test",
        "call_test",
        "add",
        1,
    )
    assert ctx.remaining is None


# --- the plugin costs nothing until used ------------------------------------------------------


PROBE = """
import sys

# collected first, before the next file imports the orchestrator
LOADED_AT_COLLECTION = "orchestrator" in sys.modules


def test_nothing_loaded(request):
    assert request.config.pluginmanager.has_plugin("orchestrator")
    assert not LOADED_AT_COLLECTION
"""

USER_TESTS = """
import pytest
from orchestrator import ToolRegistry
from orchestrator.testing import Script, call, run_script

registry = ToolRegistry()


@registry.tool
def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def tool_registry():
    return registry


async def test_it(orchestrator):
    run = await run_script(orchestrator, Script(call("double", x=21)))
    run.assert_outputs([42])
"""


def test_the_plugin_is_free_until_a_project_uses_its_fixtures(tmp_path: Path) -> None:
    """In a project of its own: pytest loads the plugin, which imports nothing until a test
    asks for a fixture; async tests using the fixtures need no marker."""
    (tmp_path / "test_a_probe.py").write_text(PROBE)
    (tmp_path / "test_b_user.py").write_text(USER_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "."],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
