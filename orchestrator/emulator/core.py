"""The emulator's engine: the API's operations and rules over the in-memory state, no HTTP."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any, Final, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from orchestrator import codec, errors
from orchestrator.emulator import faults, lifecycle, replies, script, settings, state, stats
from orchestrator.protocols.assistants import models

__all__ = ["CreateRunBody", "CreateThreadAndRunBody", "Engine", "ModifyRunBody", "SubmitBody"]

T = TypeVar("T")
D = TypeVar("D")

#: Emulator metadata keys may hold longer values than the API's 512 characters.
EMULATOR_VALUE_LIMIT: Final = 65536
_EMULATOR_KEYS: Final = frozenset({script.SCRIPT_KEY, script.FAULTS_KEY})
_AUTO_TRUNCATION: Final = models.TruncationStrategy(type="auto")


# The API refuses unknown keys on these bodies (``additionalProperties: false``).
class CreateRunBody(models.CreateRun, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Strict body of create-run."""


class CreateThreadAndRunBody(
    models.CreateThreadAndRun, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """Strict body of create-thread-and-run."""


class SubmitBody(models.SubmitToolOutputs, forbid_unknown_fields=True, omit_defaults=True):
    """Strict body of submit_tool_outputs."""


class ModifyRunBody(models.ModifyRun, forbid_unknown_fields=True, omit_defaults=True):
    """Strict body of modify-run."""


RunParams = CreateRunBody | CreateThreadAndRunBody


def _given(value: T | None | UnsetType, default: D) -> T | D:
    return default if value is None or isinstance(value, UnsetType) else value


class Engine:
    """Assistants, threads, runs and the rules the real service enforces on them."""

    def __init__(self, s: settings.EmulatorSettings) -> None:
        self.settings = s
        self.store = state.Store()
        self.faults = faults.Faults(s)
        self.counters = stats.Counters()
        self._scripts: dict[str, tuple[script.Round, ...]] = {}

    def configure(self, s: settings.EmulatorSettings) -> None:
        """Use new settings from now on (live runs keep their timestamps)."""
        self.settings = s
        self.faults.configure(s)

    def reset(self) -> None:
        """Forget every object and count, and restart the fault draws."""
        self.store.clear()
        self.counters.clear()
        self.faults.reset()

    def advance(self, rs: state.RunState, now: float | None = None) -> state.RunState:
        """Bring ``rs`` up to date."""
        lifecycle.advance(rs, time.time() if now is None else now, self.settings)
        return rs

    def stats(self) -> stats.EmulatorStats:
        """Counters plus every run's current status."""
        now = time.time()
        runs = Counter(self.advance(rs, now).run.status for rs in self.store.runs.values())
        return self.counters.snapshot(dict(runs))

    # --- lookups -------------------------------------------------------------------------------

    def assistant(self, assistant_id: str) -> models.Assistant:
        """The assistant, or 404."""
        found = self.store.assistants.get(assistant_id)
        if found is None:
            raise replies.not_found("assistant", assistant_id)
        return found

    def thread(self, thread_id: str) -> state.ThreadState:
        """The thread, or 400 for a malformed id, or 404."""
        found = self.store.threads.get(thread_id)
        if found is None:
            _check_prefix("thread_id", thread_id, "thread")
            raise replies.not_found("thread", thread_id)
        return found

    def run(self, thread_id: str, run_id: str) -> state.RunState:
        """The run on that thread, brought up to date, or 404."""
        ts = self.thread(thread_id)
        rs = self.store.runs.get(run_id)
        if rs is None or rs.thread is not ts:
            _check_prefix("run_id", run_id, "run")
            raise replies.not_found("run", run_id)
        return self.advance(rs)

    def step(self, rs: state.RunState, step_id: str) -> models.RunStep:
        """A step of the run, or 404."""
        for step in rs.steps:
            if step.id == step_id:
                return step
        raise replies.not_found("run step", step_id)

    def active_run(self, ts: state.ThreadState, now: float) -> state.RunState | None:
        """The run holding the thread's lock, if any."""
        rs = ts.active
        if rs is not None:
            lifecycle.advance(rs, now, self.settings)  # finishing clears ts.active
        return ts.active

    # --- assistants, threads, messages ---------------------------------------------------------

    def create_assistant(self, body: models.CreateAssistant) -> models.Assistant:
        """A new assistant."""
        metadata = _given(body.metadata, {})
        _check_metadata(metadata)
        assistant = models.Assistant(
            id=state.new_id("asst_"),
            created_at=int(time.time()),
            name=_given(body.name, None),
            description=_given(body.description, None),
            model=body.model,
            instructions=_given(body.instructions, None),
            tools=_given(body.tools, []),
            metadata=metadata,
        )
        if script.SCRIPT_KEY in metadata:
            self._script(metadata[script.SCRIPT_KEY])  # refuse a bad script now, not per run
        self.store.assistants[assistant.id] = assistant
        return assistant

    def modify_assistant(self, assistant_id: str, body: models.ModifyAssistant) -> models.Assistant:
        """The assistant with the fields the body sets replaced (404 if there is none)."""
        old = self.assistant(assistant_id)
        changes = {
            f: getattr(body, f)
            for f in body.__struct_fields__
            if getattr(body, f) is not msgspec.UNSET
        }
        if isinstance(changes.get("metadata"), dict):
            _check_metadata(changes["metadata"])
            if script.SCRIPT_KEY in changes["metadata"]:
                self._script(changes["metadata"][script.SCRIPT_KEY])
        new = msgspec.structs.replace(old, **changes)
        self.store.assistants[assistant_id] = new
        return new

    def create_thread(
        self, body: models.CreateThread | models.ThreadRequest | UnsetType
    ) -> state.ThreadState:
        """A new thread with its first messages."""
        now = time.time()
        metadata = {} if body is UNSET else _given(body.metadata, {})
        _check_metadata(metadata)
        thread = models.Thread(
            id=state.new_id("thread_"),
            created_at=int(now),
            metadata=metadata,
            tool_resources=None if body is UNSET else _given(body.tool_resources, None),
        )
        ts = state.ThreadState(thread)
        for req in [] if body is UNSET else _given(body.messages, []):
            ts.messages.append(_message(req, thread.id, now))
        self.store.threads[thread.id] = ts
        return ts

    def add_message(self, ts: state.ThreadState, req: models.MessageRequest) -> models.Message:
        """A message appended to an idle thread."""
        now = time.time()
        active = self.active_run(ts, now)
        if active is not None:
            raise replies.ApiError(
                400,
                f"Can't add messages to {ts.thread.id} while a run {active.run.id} is active.",
            )
        _check_metadata(_given(req.metadata, {}))
        message = _message(req, ts.thread.id, now)
        ts.messages.append(message)
        return message

    # --- runs ----------------------------------------------------------------------------------

    def create_run(self, ts: state.ThreadState, body: RunParams) -> state.RunState:
        """A new queued run on ``ts``."""
        now = time.time()
        assistant = self.assistant(body.assistant_id)
        metadata = _given(body.metadata, {})
        _check_metadata(metadata)
        tools = _given(body.tools, assistant.tools)
        parallel = _given(body.parallel_tool_calls, True)
        choice = body.tool_choice
        tool_choice = "auto" if choice is None or isinstance(choice, UnsetType) else choice
        defaults = assistant.metadata or {}
        source = metadata.get(script.SCRIPT_KEY) or defaults.get(script.SCRIPT_KEY)
        rounds = (
            self._script(source)
            if source
            else script.default_script(
                tools, parallel=parallel, tool_choice=tool_choice, seed=self.settings.seed
            )
        )
        run_faults = _faults(metadata.get(script.FAULTS_KEY) or defaults.get(script.FAULTS_KEY))
        active = self.active_run(ts, now)
        if active is not None:
            raise replies.ApiError(
                400, f"Thread {ts.thread.id} already has an active run {active.run.id}."
            )
        extra = getattr(body, "additional_messages", None)
        for req in _given(extra, []):
            ts.messages.append(_message(req, ts.thread.id, now))
        instructions = _given(body.instructions, assistant.instructions)
        more = getattr(body, "additional_instructions", None)
        if isinstance(more, str):
            instructions = f"{instructions}\n{more}" if instructions else more
        fmt = body.response_format
        response_format = "auto" if fmt is None or isinstance(fmt, UnsetType) else fmt
        ttl = self.settings.run_ttl
        run = models.Run(
            id=state.new_id("run_"),
            created_at=int(now),
            thread_id=ts.thread.id,
            assistant_id=assistant.id,
            status=lifecycle.QUEUED,
            expires_at=math.ceil(now + ttl),
            model=_given(body.model, assistant.model) or self.settings.model,
            instructions=instructions,
            tools_json=codec.raw_json(tools),
            metadata=metadata,
            temperature=_given(body.temperature, 1.0),
            top_p=_given(body.top_p, 1.0),
            max_prompt_tokens=_given(body.max_prompt_tokens, None),
            max_completion_tokens=_given(body.max_completion_tokens, None),
            truncation_strategy=_given(body.truncation_strategy, _AUTO_TRUNCATION),
            tool_choice=tool_choice,
            parallel_tool_calls=parallel,
            response_format=response_format,
        )
        rs = state.RunState(run, ts, rounds, now=now, ttl=ttl)
        _set_faults(rs, run_faults)
        self.store.runs[run.id] = rs
        ts.runs.append(rs)
        ts.active = rs
        return rs

    def modify_run(self, rs: state.RunState, body: ModifyRunBody) -> None:
        """New metadata (``emulator_faults`` in it takes effect at once)."""
        if body.metadata is UNSET:
            return
        metadata = body.metadata or {}
        _check_metadata(metadata)
        _set_faults(rs, _faults(metadata.get(script.FAULTS_KEY)))
        rs.run.metadata = metadata
        rs.poke()

    def check_submit(self, rs: state.RunState, body: SubmitBody) -> dict[str, str]:
        """The outputs by call id, when the run takes exactly these now; else 400."""
        run = rs.run
        if run.status != lifecycle.REQUIRES_ACTION or run.required_action is None:
            raise replies.ApiError(
                400, f'Runs in status "{run.status}" do not accept tool outputs.'
            )
        expected = [c.id for c in run.required_action.tool_calls]
        got = [o.tool_call_id for o in body.tool_outputs]
        if sorted(expected) != sorted(got):
            raise replies.ApiError(400, f"Expected tool outputs for call_ids {expected}, got {got}")
        return {o.tool_call_id: o.output for o in body.tool_outputs}

    def submit(self, rs: state.RunState, outputs: dict[str, str]) -> None:
        """Apply checked outputs: the run goes back to ``queued``."""
        lifecycle.submit(rs, time.time(), outputs)

    def cancel(self, rs: state.RunState) -> None:
        """Start cancelling, or 400 when the run is past that."""
        status = rs.run.status
        if status in lifecycle.TERMINAL or status == lifecycle.CANCELLING:
            raise replies.ApiError(400, f"Cannot cancel run with status '{status}'.")
        lifecycle.cancel(rs, time.time())

    def _script(self, text: str) -> tuple[script.Round, ...]:
        rounds = self._scripts.get(text)
        if rounds is None:
            try:
                rounds = script.parse_script(text)
            except script.ScriptError as exc:
                raise replies.ApiError(
                    400,
                    f"Invalid 'metadata.{script.SCRIPT_KEY}': {exc}",
                    param=f"metadata.{script.SCRIPT_KEY}",
                ) from None
            if len(self._scripts) > 1024:
                self._scripts.clear()
            self._scripts[text] = rounds
        return rounds


# --- helpers -----------------------------------------------------------------------------------

_faults_decoder: Final = msgspec.json.Decoder(settings.FaultSettings)


def _faults(text: str | None) -> settings.FaultSettings | None:
    if not text:
        return None
    try:
        return _faults_decoder.decode(text)
    # RecursionError: JSON nested too deeply for the decoder.
    except (msgspec.DecodeError, errors.ConfigError, RecursionError) as exc:
        raise replies.ApiError(
            400,
            f"Invalid 'metadata.{script.FAULTS_KEY}': {exc}",
            param=f"metadata.{script.FAULTS_KEY}",
        ) from None


def _set_faults(rs: state.RunState, fs: settings.FaultSettings | None) -> None:
    rs.faults = fs
    rs.fault_table = fs.fault_table() if fs is not None else ()


def _check_prefix(param: str, value: str, prefix: str) -> None:
    if not value.startswith(prefix):
        raise replies.ApiError(
            400,
            f"Invalid '{param}': '{value}'. Expected an ID that begins with '{prefix}'.",
            param=param,
        )


def _check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > 16:
        raise replies.ApiError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise replies.ApiError(
                400,
                f"Invalid 'metadata': key '{key[:16]}...' is longer than 64 characters.",
                param="metadata",
                code="string_above_max_length",
            )
        limit = EMULATOR_VALUE_LIMIT if key in _EMULATOR_KEYS else 512
        if len(value) > limit:
            raise replies.ApiError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {limit}, but got a string with length {len(value)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )


def _content(part: dict[str, Any], index: int) -> models.MessageContent:
    kind = str(part.get("type", "text"))
    if kind == "text":
        text = part.get("text")
        if isinstance(text, dict):
            text = text.get("value", "")
        if not isinstance(text, str):
            raise replies.ApiError(
                400,
                f"Invalid type for 'content[{index}].text': expected a string, but got "
                f"{_json_kind(text)} instead.",
                param=f"content[{index}].text",
                code="invalid_type",
            )
        return models.MessageContent(type="text", text=models.TextValue(value=text))
    return models.MessageContent(
        type=kind, image_file=part.get("image_file"), image_url=part.get("image_url")
    )


def _message(req: models.MessageRequest, thread_id: str, now: float) -> models.Message:
    if isinstance(req.content, str):
        content = [models.MessageContent(type="text", text=models.TextValue(value=req.content))]
    else:
        content = [_content(p, i) for i, p in enumerate(req.content)]
    return models.Message(
        id=state.new_id("msg_"),
        created_at=int(now),
        thread_id=thread_id,
        status="completed",
        role=req.role,
        content=content,
        metadata=_given(req.metadata, {}),
        attachments=_given(req.attachments, []),
        completed_at=int(now),
    )


def _json_kind(value: object) -> str:
    """How the API names a JSON value's type in its messages."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a decimal"
        case list():
            return "an array"
        case dict():
            return "an object"
    return "a string"
