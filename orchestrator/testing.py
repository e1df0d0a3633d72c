"""Testing your tools against the real orchestrator and the bundled emulator.

Unit-test a tool directly, through the same argument decoding a run uses::

    value = await call_tool(get_weather, {"city": "Paris"})
    value = await call_tool(book, {"room": "A"}, context=tool_context(attempt=2))

Script a whole run: which tools the emulator's assistant calls, with which arguments, round
after round; then look at what was submitted::

    run = await run_script(orch, Script(
        call("get_weather", city="Paris"),                                # round 1
        [call("book", room="A"), call("book", room="B")],                 # round 2, in parallel
        reply="Booked: {outputs}",
    ))
    run.assert_outputs(['{"temp": 21.0}'], ["booked A", "booked B"])

With pytest, the plugin ``orchestrator_pytest`` (installed with the package, loaded only when a
test asks for one of its fixtures) serves ``emulator``, ``orchestrator_config``,
``tool_registry`` and ``orchestrator``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from orchestrator import config, events, tools
from orchestrator import orchestrator as orchestrator_mod
from orchestrator.driver import RunResult
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import models

__all__ = [
    "Call",
    "Script",
    "ScriptedRun",
    "Submitted",
    "call",
    "call_tool",
    "emulator_config",
    "run_script",
    "start_emulator",
    "tool_context",
]

#: The emulator's timings for tests: runs move in milliseconds.
FAST_EMULATOR: Final = {"queue_delay": 0.005, "think_delay": 0.005, "cancel_delay": 0.005}
#: API key the tests send; the emulator accepts any key unless told otherwise.
TEST_API_KEY: Final = "sk-test"


class Call(msgspec.Struct, frozen=True):
    """One tool call the scripted assistant makes."""

    name: str
    arguments: dict[str, Any] = {}
    #: Arguments text sent as it is instead of ``arguments`` (e.g. invalid JSON).
    raw: str | None = None


def call(name: str, /, **arguments: Any) -> Call:
    """``call("get_weather", city="Paris")``: a call of ``name`` with these arguments."""
    return Call(name, arguments)


class Script:
    """What the emulator's assistant does in a run, round by round.

    Each round is a ``Call``, a sequence of calls (made in parallel, in one round), or a raw
    emulator round (a mapping such as ``{"fail": "server_error"}``; see
    ``orchestrator.emulator.script``). ``reply`` is the final message: ``{outputs}`` and
    ``{output:NAME}`` are replaced by the tools' outputs. Without it the assistant quotes them.
    """

    def __init__(
        self, *rounds: Call | Sequence[Call] | Mapping[str, Any], reply: str | None = None
    ) -> None:
        if not rounds and reply is None:
            raise ValueError("a Script needs at least one round or a reply")
        self.rounds = [_round(r) for r in rounds]
        if reply is not None:
            self.rounds.append({"message": reply})

    def metadata(self) -> dict[str, str]:
        """The run metadata that makes the emulator follow this script."""
        return {"emulator_script": json.dumps(self.rounds)}

    def __repr__(self) -> str:
        return f"Script({self.rounds!r})"


def _round(spec: Call | Sequence[Call] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    calls = [spec] if isinstance(spec, Call) else list(spec)
    if not calls or not all(isinstance(c, Call) for c in calls):
        raise TypeError(f"a round is a Call, a list of Calls or a mapping, not {spec!r}")
    return {"tool_calls": [_call(c) for c in calls]}


def _call(c: Call) -> dict[str, Any]:
    if c.raw is not None:
        return {"name": c.name, "arguments_raw": c.raw}
    return {"name": c.name, "arguments": c.arguments}


class Submitted(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call of a round and the output submitted for it."""

    name: str
    #: The arguments JSON text the model sent.
    arguments: str
    output: str
    #: Set when the call failed (``tool_error``, ``invalid_arguments``, ``timeout``...).
    error_type: str | None = None


class ScriptedRun:
    """How a scripted run went: its result, every event, and each round's calls and outputs."""

    def __init__(self, result: RunResult, seen: list[events.Event]) -> None:
        self.result = result
        self.events = seen
        #: Per answered round, its calls in the order the run listed them.
        self.rounds: list[list[Submitted]] = _rounds(seen)

    @property
    def ok(self) -> bool:
        """The run completed."""
        return self.result.ok

    @property
    def reply(self) -> str | None:
        """The assistant's final text."""
        return self.result.reply

    def outputs(self, name: str | None = None) -> list[str]:
        """Every submitted output in order, or those of the tool ``name``."""
        return [s.output for r in self.rounds for s in r if name is None or s.name == name]

    def assert_outputs(self, *rounds: Sequence[object]) -> None:
        """Assert the outputs submitted, round by round, in call order.

        A ``str`` is compared with the output text; any other value with the output decoded
        as JSON (``{"temp": 21.0}`` matches ``'{"temp":21.0}'``).
        """
        actual = [[s.output for s in r] for r in self.rounds]
        expected = [list(r) for r in rounds]
        same = len(actual) == len(expected) and all(
            len(a) == len(e) and all(_matches(o, x) for o, x in zip(a, e, strict=True))
            for a, e in zip(actual, expected, strict=True)
        )
        if not same:
            shown = "\n".join(
                f"  round {i + 1}: " + ", ".join(f"{s.name} -> {s.output!r}" for s in r)
                for i, r in enumerate(self.rounds)
            )
            raise AssertionError(
                f"submitted outputs differ\nexpected: {expected!r}\nsubmitted:\n{shown or '  none'}"
            )


def _matches(output: str, expected: object) -> bool:
    if isinstance(expected, str):
        return output == expected
    try:
        return bool(json.loads(output) == expected)
    except ValueError:
        return False


def _rounds(seen: list[events.Event]) -> list[list[Submitted]]:
    """Pair each round's requested calls with what was submitted for them."""
    rounds: list[list[Submitted]] = []
    requested: list[models.RequiredToolCall] = []
    failures: dict[str, str | None] = {}
    for event in seen:
        match event:
            case events.ToolCallsRequested(calls=calls):
                requested = list(calls)
            case events.ToolCallFinished(tool_call_id=call_id, error_type=error_type):
                failures[call_id] = error_type
            case events.OutputsSubmitted(outputs=outputs):
                by_id = {o.tool_call_id: o.output for o in outputs}
                rounds.append(
                    [
                        Submitted(
                            name=c.function.name if c.function else c.type,
                            arguments=c.function.arguments if c.function else "",
                            output=by_id.get(c.id, ""),
                            error_type=failures.get(c.id),
                        )
                        for c in requested
                        if c.id in by_id
                    ]
                )
            case _:
                pass
    return rounds


async def run_script(
    orch: orchestrator_mod.Orchestrator,
    script: Script | None = None,
    *,
    message: str = "Hello",
    assistant_id: str | None = None,
    **params: Any,
) -> ScriptedRun:
    """Run ``script`` on the emulator behind ``orch``: an assistant with the registry's tools
    (unless ``assistant_id`` is given), a new thread with ``message``, and one run driven to
    its end. ``params`` are other create-run fields (``tools``, ``instructions``...).

    Without a script the emulator's assistant calls every tool once, in one round, with
    arguments made up from its schema: a smoke test that each tool takes what it declares.
    """
    client = orch.client
    if assistant_id is None:
        assistant = await client.create_assistant(
            model="gpt-4o", name="test assistant", tools=orch.registry.definitions()
        )
        assistant_id = assistant.id
    thread = await client.create_thread()
    seen: list[events.Event] = []
    metadata = {**(params.pop("metadata", None) or {})}
    if script is not None:
        metadata.update(script.metadata())
    result = await orch.run(
        thread_id=thread.id,
        assistant_id=assistant_id,
        messages=[models.MessageRequest(role="user", content=message)],
        handler=seen.append,
        metadata=metadata,
        **params,
    )
    return ScriptedRun(result, seen)


def tool_context(
    *,
    run_id: str = "run_test",
    thread_id: str = "thread_test",
    tool_call_id: str = "call_test",
    tool_name: str = "tool",
    deadline: float | None = None,
    attempt: int = 1,
) -> tools.ToolContext:
    """A ``ToolContext`` for calling a tool directly in a unit test."""
    return tools.ToolContext(
        run_id=run_id,
        thread_id=thread_id,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        deadline=deadline,
        attempt=attempt,
    )


async def call_tool(
    tool: tools.Tool[..., Any],
    arguments: Mapping[str, Any] | str = "",
    *,
    context: tools.ToolContext | None = None,
) -> Any:
    """Call a tool as a run would: the arguments (a mapping, or the model's JSON text) are
    decoded and validated first (``msgspec.ValidationError`` when they do not fit), a sync
    tool runs in a worker thread. Returns what the function returned."""
    text = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
    values = tool.decode_arguments(text)
    if context is None:
        context = tool_context(tool_name=tool.name)
    return await tool.invoke(values, context)


def start_emulator(**settings: Any) -> Emulator:
    """An emulator with test timings (``settings`` override them); use in ``async with``."""
    return Emulator(**{**FAST_EMULATOR, **settings})


def emulator_config(emulator: Emulator, **sections: Mapping[str, Any]) -> config.Config:
    """Settings for driving runs on ``emulator`` quickly: fast polling and retries, no tool
    modules imported. ``sections`` override keys, e.g. ``poll={"mode": "stream"}``."""
    raw: dict[str, Any] = {
        "api": {"base_url": emulator.base_url},
        "poll": {"initial_interval": 0.01, "max_interval": 0.05},
        "retry": {"initial_backoff": 0.01, "max_backoff": 0.05},
        "run": {"cancel_timeout": 2.0, "run_timeout": 60.0},
        "tools": {"modules": [], "deadline_margin": 0.05},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return msgspec.convert(raw, config.Config)
