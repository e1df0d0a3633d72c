"""The scripted assistant: what each round of a run does.

A run's script is a tuple of ``Round``s. The default one calls every function tool once (all in
one round when ``parallel_tool_calls``, else one per round) with arguments synthesised from the
function's schema, then answers with a message quoting the outputs. The metadata key
``emulator_script`` (on the run, else on its assistant) replaces it with a JSON list of rounds::

    [{"tool_calls": [{"name": "get_time", "arguments": {"tz": "UTC"}}], "think_ms": 20},
     {"tool_calls": [{"name": "f", "arguments_raw": "{not json"}]},
     {"message": "It is {output:get_time}. All outputs: {outputs}"}]

Other rounds: ``{"fail": "server_error"}``, ``{"incomplete": "max_completion_tokens"}``,
``{"stall": true}`` (never advances, so the run reaches ``expires_at``) and ``{"think_ms": N}``
alone (adds N ms of thinking to the next round). A script that runs out after tool outputs
ends with the default message. ``{"mcp_calls": [{"server_label": "github", "name": "search",
"arguments": {...}}]}`` asks for approval: Foundry's ``submit_tool_approval`` (``foundry_rounds``),
or ``mcp_approval_request`` items in ``/responses`` (``responses_mcp``). Foundry's
``{"server_tools": [{"type": "bing_grounding"}, {"type": "mcp_list_tools", "server_label":
"github"}]}`` adds steps the service ran by itself and goes on.
"""

from __future__ import annotations

import random
from typing import Any, Final, Literal

import msgspec

from orchestrator.emulator import schema
from orchestrator.protocols.assistants import models

__all__ = [
    "MCP_DENIED",
    "Round",
    "ScriptError",
    "default_script",
    "mcp_output",
    "parse_script",
    "render_message",
]

SCRIPT_KEY: Final = "emulator_script"
FAULTS_KEY: Final = "emulator_faults"

RoundKind = Literal[
    "tool_calls", "message", "fail", "incomplete", "stall", "approval", "server_tools"
]
#: Rounds after which the closing message still has to come.
_LEADS_ON: Final = frozenset({"tool_calls", "approval", "server_tools"})

FAIL_MESSAGES: Final = {
    "server_error": "Sorry, something went wrong.",
    "rate_limit_exceeded": "You exceeded your current quota, please check your plan and billing "
    "details.",
    "invalid_prompt": "Invalid prompt: your prompt was flagged as potentially violating our "
    "usage policy.",
}

#: What the closing message quotes for an MCP call the user denied.
MCP_DENIED: Final = "denied by the user"


def mcp_output(name: str, server_label: str | None) -> str:
    """What the emulated MCP server answers to a call it ran."""
    return f'{{"{name}": "ran on {server_label}"}}'


class ScriptError(ValueError):
    """An ``emulator_script`` that cannot be used; the message says why."""


class Round:
    """One turn of the scripted assistant."""

    __slots__ = ("calls", "kind", "labels", "text", "think")

    def __init__(
        self,
        kind: RoundKind,
        *,
        calls: tuple[tuple[str, str], ...] = (),
        text: str | None = None,
        think: float | None = None,
        labels: tuple[str, ...] = (),
    ) -> None:
        self.kind: RoundKind = kind
        #: (function name, arguments JSON text) of each call; for ``server_tools``, (type, "").
        self.calls = calls
        #: MCP server label of each call (``approval`` and ``server_tools`` rounds).
        self.labels = labels
        #: Message template, failure code or incomplete reason.
        self.text = text
        #: Seconds in progress; None: the emulator's ``think_delay``.
        self.think = think


#: The closing round: a message quoting every output (or greeting when there were none).
FINAL: Final = Round("message")


class _Call(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    arguments: Any = msgspec.UNSET
    arguments_raw: str | None = None


class _McpCall(msgspec.Struct, forbid_unknown_fields=True):
    server_label: str
    name: str
    arguments: Any = msgspec.UNSET
    arguments_raw: str | None = None


class _ServerTool(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    server_label: str | None = None


class _Round(msgspec.Struct, forbid_unknown_fields=True):
    tool_calls: list[_Call] | None = None
    mcp_calls: list[_McpCall] | None = None
    server_tools: list[_ServerTool] | None = None
    message: str | None = None
    fail: str | None = None
    incomplete: str | None = None
    stall: bool = False
    think_ms: int | None = None


_script_decoder: Final = msgspec.json.Decoder(list[_Round])
_encoder: Final = msgspec.json.Encoder()


def parse_script(text: str) -> tuple[Round, ...]:
    """The rounds of an ``emulator_script`` value; raises ``ScriptError``."""
    try:
        raw = _script_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise ScriptError(f"{SCRIPT_KEY}: {exc}") from exc
    except RecursionError as exc:  # arguments nested thousands deep
        raise ScriptError(f"{SCRIPT_KEY}: JSON nested too deeply") from exc
    rounds: list[Round] = []
    pending = 0.0  # think_ms of rounds with no outcome, added to the next one
    for i, r in enumerate(raw):
        if r.think_ms is not None and r.think_ms < 0:
            raise ScriptError(f"{SCRIPT_KEY}[{i}]: think_ms must be >= 0")
        think = None if r.think_ms is None and not pending else pending + (r.think_ms or 0) / 1000
        outcomes = _outcomes(r, think, i)
        if not outcomes:
            if r.think_ms is None:
                raise ScriptError(
                    f"{SCRIPT_KEY}[{i}]: a round needs one of tool_calls, message, fail, "
                    "incomplete, stall or think_ms"
                )
            pending = think or 0.0
            continue
        if len(outcomes) > 1:
            kinds = [o.kind for o in outcomes]
            raise ScriptError(f"{SCRIPT_KEY}[{i}]: one outcome per round, got {kinds}")
        pending = 0.0
        rounds.append(outcomes[0])
    if not rounds:
        raise ScriptError(f"{SCRIPT_KEY}: needs at least one round with an outcome")
    return (*rounds, FINAL) if rounds[-1].kind in _LEADS_ON else tuple(rounds)


def _outcomes(r: _Round, think: float | None, i: int) -> list[Round]:
    found: list[Round] = []
    if r.tool_calls is not None:
        if not r.tool_calls:
            raise ScriptError(f"{SCRIPT_KEY}[{i}]: tool_calls is empty")
        calls = tuple((c.name, _arguments(c)) for c in r.tool_calls)
        found.append(Round("tool_calls", calls=calls, think=think))
    if r.mcp_calls:
        calls = tuple((c.name, _arguments(c)) for c in r.mcp_calls)
        labels = tuple(c.server_label for c in r.mcp_calls)
        found.append(Round("approval", calls=calls, labels=labels, think=think))
    if r.server_tools:
        calls = tuple((t.type, "") for t in r.server_tools)
        labels = tuple(t.server_label or "" for t in r.server_tools)
        found.append(Round("server_tools", calls=calls, labels=labels, think=think))
    if r.message is not None:
        found.append(Round("message", text=r.message, think=think))
    if r.fail is not None:
        found.append(Round("fail", text=r.fail, think=think))
    if r.incomplete is not None:
        found.append(Round("incomplete", text=r.incomplete, think=think))
    if r.stall:
        found.append(Round("stall", think=think))
    return found


def _arguments(call: _Call | _McpCall) -> str:
    if call.arguments_raw is not None:
        return call.arguments_raw
    if call.arguments is msgspec.UNSET:
        return "{}"
    try:
        return _encoder.encode(call.arguments).decode()
    except (msgspec.EncodeError, OverflowError, RecursionError) as exc:
        raise ScriptError(f"{SCRIPT_KEY}: arguments of {call.name!r}: {exc}") from exc


# --- the default script ------------------------------------------------------------------------

_args_cache: dict[tuple[int, str, bytes], str] = {}


def arguments_for(function: models.FunctionDefinition, seed: int) -> str:
    """Arguments JSON valid for ``function``'s schema; the same for the same seed."""
    params = function.parameters or {"type": "object", "properties": {}}
    key = (seed, function.name, _encoder.encode(params))
    args = _args_cache.get(key)
    if args is None:
        value = schema.synthesize(params, random.Random(f"{seed}:{function.name}"))
        try:
            args = _encoder.encode(value if isinstance(value, dict) else {}).decode()
        except (msgspec.EncodeError, OverflowError, RecursionError, TypeError):
            args = "{}"
        if len(_args_cache) > 4096:  # bounded: schemas come from callers
            _args_cache.clear()
        _args_cache[key] = args
    return args


def default_script(
    tools: list[models.ToolDefinition],
    *,
    parallel: bool,
    tool_choice: str | models.ToolChoice | None,
    seed: int,
) -> tuple[Round, ...]:
    """Each function tool called once, then a message quoting the outputs."""
    functions = [t.function for t in tools if t.type == "function" and t.function is not None]
    if tool_choice == "none":
        functions = []
    elif isinstance(tool_choice, models.ToolChoice) and tool_choice.function is not None:
        functions = [f for f in functions if f.name == tool_choice.function.name]
    calls = tuple((f.name, arguments_for(f, seed)) for f in functions)
    if not calls:
        return (FINAL,)
    if parallel:
        return (Round("tool_calls", calls=calls), FINAL)
    return (*(Round("tool_calls", calls=(c,)) for c in calls), FINAL)


def render_message(template: str | None, outputs: list[tuple[str, str]], said: str | None) -> str:
    """The assistant's reply: ``{outputs}`` and ``{output:NAME}`` replaced by what tools gave."""
    quoted = "\n".join(f"{name} -> {output}" for name, output in outputs)
    if template is None:
        if outputs:
            return "Here is what the tools returned:\n" + quoted
        return f"You said: {said}" if said else "Hello from the emulator."
    text = template.replace("{outputs}", quoted)
    for name, output in outputs:
        text = text.replace("{output:" + name + "}", output)
    return text
