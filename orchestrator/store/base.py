"""Stored records and the ``JobStore`` protocol: durable jobs plus the tool-output ledger.

Guarantees every implementation gives (memory, SQLite, and later PostgreSQL via procrastinate):

* **At-least-once claim.** ``claim`` hands a job to one worker at a time under a lease that the
  worker renews with ``heartbeat``/``heartbeat_many``. A job whose lease expires (its worker died
  or hung) is claimable again at once; a worker that stops heartbeating must assume it lost the
  job. So a job may be *started* more than once, and the worker makes each step idempotent:
  the thread id and run id are recorded the moment they exist, and tool outputs go to the ledger
  before they are submitted.
* **Fenced writes.** Every claim increments the job's ``epoch`` (a fencing token). Writes made on
  behalf of a claim (``record_thread``, ``record_run``, ``save_output``, ``release``,
  ``complete``) carry that epoch and raise ``errors.LeaseLost`` unless it is still the job's
  current epoch and the job is still running, so a zombie worker's late write never wins over
  the new owner's. The write is atomic with the check.
* **One active run per thread.** A job is never claimed while another job on the same thread is
  running under a live lease (procrastinate's ``lock=thread_id``); jobs of one thread start in
  enqueue order.
* **De-duplication.** ``enqueue(..., queueing_lock=k)`` refuses (``errors.AlreadyEnqueued``) while
  another *queued* job holds ``k`` (procrastinate's ``queueing_lock``).
* **Bounded retries.** ``claim(..., max_attempts=n)`` ends a job FAILED instead of starting its
  attempt ``n + 1``, and returns that FAILED snapshot so the caller can cancel its run.
  ``release`` (graceful shutdown) gives its attempt back.
* **A round lifecycle in the ledger.** Before a tool round runs, ``begin_calls`` records each call
  as begun under the claim (fenced, and refused once the lease has lapsed), which also counts the
  call's attempts; ``save_output`` stores each output before it is submitted; ``mark_submitted``
  records that the server took the round. A resumed job reads ``calls`` to re-submit stored
  outputs, re-run begun calls at a higher attempt, and never re-send a round the server took.
* **Quarantine, never a blocked queue.** A row ``claim`` cannot load (a spec that
  ``decode_spec`` refuses, e.g. corrupted bytes or a newer ``SPEC_VERSION``; a column of the wrong
  type; a ``state`` that is not a ``JobState``) is *quarantined* instead of raising: in the claim's
  own transaction the store sets it FAILED with ``quarantine_result(reason)`` as its result,
  clears its lease, appends ``quarantine_message(reason)`` to its history, leaves every other
  column (the spec bytes above all) untouched, and goes on to the next claimable job. Rows in an
  unknown state are swept at least whenever ``claim`` finds nothing to claim, so ``counts`` and
  ``worker --until-idle`` see them as FAILED. Read paths never quarantine: ``list_jobs`` skips an
  unreadable row (logging a warning) and ``get`` raises ``errors.StoreError`` naming the job.
* **An audit trail.** ``history`` is an append-only per-job log of what the store did (enqueued,
  claimed, lease reclaimed, recorded, released, stale write rejected, completed) plus whatever
  the worker adds with ``append_history``.

Time is wall-clock ``time.time()`` so that processes sharing a database agree on lease expiry;
``now=`` lets tests move the clock instead of sleeping.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from typing import Final, Protocol, Self

import msgspec
from msgspec import UNSET, Struct, UnsetType

from orchestrator import errors
from orchestrator.protocols.assistants import models
from orchestrator.protocols.responses import wire

__all__ = [
    "SPEC_VERSION",
    "AdoptJob",
    "CallRecord",
    "CreateJob",
    "Job",
    "JobEvent",
    "JobResult",
    "JobSpec",
    "JobState",
    "JobStore",
    "ResponseJob",
    "RunOverrides",
    "decode_spec",
    "encode_spec",
    "quarantine_message",
    "quarantine_result",
]

#: Version of the stored spec envelope; a store refuses records newer than it understands.
SPEC_VERSION: Final = 1


def _require_id(value: object, name: str) -> None:
    # Runs at construction too, before any type check: a non-string must fail cleanly here.
    if not isinstance(value, str) or not value or value != value.strip():
        raise errors.InvalidJob(f"{name}: expected an id without surrounding spaces, got {value!r}")


class RunOverrides(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-job overrides of the assistant's settings (the optional ``CreateRun`` fields)."""

    model: str | None | UnsetType = UNSET
    instructions: str | None | UnsetType = UNSET
    additional_instructions: str | None | UnsetType = UNSET
    tools: list[models.ToolDefinition] | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    max_prompt_tokens: int | None | UnsetType = UNSET
    max_completion_tokens: int | None | UnsetType = UNSET
    truncation_strategy: models.TruncationStrategy | None | UnsetType = UNSET
    tool_choice: str | models.ToolChoice | None | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    response_format: str | models.ResponseFormat | None | UnsetType = UNSET
    reasoning_effort: str | None | UnsetType = UNSET


class _Spec(Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    pass


class CreateJob(_Spec, frozen=True, kw_only=True, omit_defaults=True, tag="create"):
    """Create a run for an assistant and drive it to its end."""

    assistant_id: str
    #: None: the worker creates a thread (holding ``messages``) and records it first.
    thread_id: str | None = None
    #: Added to the thread: as its first messages when new, else as ``additional_messages``.
    messages: tuple[models.MessageRequest, ...] = ()
    overrides: RunOverrides = msgspec.field(default_factory=RunOverrides)

    def __post_init__(self) -> None:
        _require_id(self.assistant_id, "assistant_id")
        if self.thread_id is not None:
            _require_id(self.thread_id, "thread_id")
        for i, message in enumerate(self.messages):
            # Wrong element types are left to encode_spec's round trip.
            if isinstance(message, models.MessageRequest) and not message.content:
                raise errors.InvalidJob(f"messages[{i}].content: must not be empty")

    def thread_request(self) -> models.ThreadRequest:
        """Body that creates this job's new thread (holding its messages)."""
        if not self.messages:
            return models.ThreadRequest()
        return models.ThreadRequest(messages=list(self.messages))

    def run_request(self) -> models.CreateRun:
        """Body of the create-run request; messages ride along only on an existing thread."""
        fields = msgspec.structs.asdict(self.overrides)
        extra = list(self.messages) if self.thread_id is not None and self.messages else UNSET
        return models.CreateRun(assistant_id=self.assistant_id, additional_messages=extra, **fields)


class AdoptJob(_Spec, frozen=True, kw_only=True, omit_defaults=True, tag="adopt"):
    """Drive a run that was created elsewhere."""

    thread_id: str
    run_id: str

    def __post_init__(self) -> None:
        _require_id(self.thread_id, "thread_id")
        _require_id(self.run_id, "run_id")


class ResponseJob(_Spec, frozen=True, kw_only=True, omit_defaults=True, tag="response"):
    """Create a background response (Responses API) and drive it through its tool rounds.

    The worker records each response of the chain as the job's ``run_id`` the moment it exists
    and tags each with the job id (``<job id>:<parent>``), so a resumed job continues from the
    last response it recorded and finds any it created but did not record.
    """

    #: The model, or (with ``agent``) left out.
    model: str | None = None
    #: A Foundry agent's name, instead of a model.
    agent: str | None = None
    #: The user's input text.
    input: str = ""
    instructions: str | None = None
    #: Continue this conversation (it carries the context instead of ``previous_response_id``).
    conversation: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] | None = None
    #: Tools offered besides the worker registry's functions: built-ins such as ``mcp``
    #: servers (their calls are approved by ``approvals.*``) or ``web_search``.
    tools: tuple[wire.Tool, ...] = ()

    def __post_init__(self) -> None:
        if self.model is None and self.agent is None:
            raise errors.InvalidJob("a response job needs a model or an agent")
        for name in ("model", "agent", "conversation"):
            value = getattr(self, name)
            if value is not None:
                _require_id(value, name)

    @property
    def thread_id(self) -> None:
        """No thread: a response chain does not lock one (jobs of it never wait on each other)."""
        return None


JobSpec = CreateJob | AdoptJob | ResponseJob


class JobState(enum.StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    #: Parked until a human decides an MCP tool approval (``orchestrator approve``); never
    #: claimed in this state. The run keeps waiting on the server until it expires.
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobResult(Struct, frozen=True, kw_only=True):
    """Summary of how a job ended."""

    #: The run's final status, or ``"error"`` when no run could be driven.
    status: str
    last_error: str | None = None
    #: Text of the assistant's reply, when it gave one.
    reply: str | None = None
    tool_calls: int = 0


class Job(Struct, frozen=True, kw_only=True):
    """A job as stored; a snapshot, never updated in place."""

    id: str
    spec: JobSpec
    state: JobState
    #: Claims that did not end in ``release``.
    attempts: int
    #: Recorded the moment the thread exists (or from the spec).
    thread_id: str | None
    #: Recorded the moment the run exists (or from the spec).
    run_id: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    #: Fencing token: incremented by every claim; 0 until the first.
    epoch: int
    result: JobResult | None
    created_at: float
    updated_at: float
    queueing_lock: str | None


class CallRecord(Struct, frozen=True, kw_only=True):
    """One tool call of a run, as the ledger knows it."""

    tool_call_id: str
    #: How many claims began this call (0: only an output was saved).
    starts: int = 0
    #: The stored output; None until saved.
    output: str | None = None
    #: The server accepted the round holding this call's output.
    submitted: bool = False


class JobEvent(Struct, frozen=True, kw_only=True):
    """One line of a job's append-only history."""

    at: float
    #: The claim epoch the entry was written under (0 before the first claim).
    epoch: int
    message: str


class _StoredSpec(Struct, frozen=True):
    """The persisted form of a spec: versioned so later code can read old rows."""

    v: int
    spec: JobSpec


class _StoredHead(Struct, frozen=True):
    """The envelope alone: its version is read before the spec is trusted to parse."""

    v: int
    spec: msgspec.Raw


_head_decoder: Final = msgspec.json.Decoder(_StoredHead)
_body_decoder: Final[msgspec.json.Decoder[JobSpec]] = msgspec.json.Decoder(JobSpec)
_spec_encoder: Final = msgspec.json.Encoder()


def encode_spec(spec: JobSpec) -> bytes:
    """Validate ``spec`` fully and return its versioned stored form.

    Struct constructors do not check field types, so the spec goes through one encode/decode
    round trip: whatever would not load back later is refused now. Raises ``errors.InvalidJob``.
    """
    if not isinstance(spec, CreateJob | AdoptJob | ResponseJob):
        raise errors.InvalidJob(f"not a job spec: {type(spec).__name__}")
    try:
        data = _spec_encoder.encode(_StoredSpec(SPEC_VERSION, spec))
    except (TypeError, ValueError, msgspec.EncodeError) as exc:
        raise errors.InvalidJob(f"job spec cannot be stored: {exc}") from exc
    decode_spec(data)
    return data


def decode_spec(data: bytes | str) -> JobSpec:
    """Load a stored spec (``{"v": 1, "spec": {...}}``); raises ``errors.InvalidJob`` only.

    Whatever the bytes (damaged, hostile, nested thousands deep, invalid UTF-8, not bytes at all,
    written by a newer version), the answer is a spec or ``InvalidJob`` saying why.
    """
    try:
        head = _head_decoder.decode(data)
        if head.v > SPEC_VERSION:
            raise errors.InvalidJob(
                f"job spec version {head.v} is newer than {SPEC_VERSION} (written by newer code)"
            )
        if head.v < 1:
            raise errors.InvalidJob(f"job spec version {head.v} is not a version")
        return _body_decoder.decode(head.spec)
    except errors.InvalidJob:
        raise
    # RecursionError: nesting; UnicodeError: bad UTF-8 or surrogates; TypeError: not bytes;
    # ValueError covers what a spec's __post_init__ raises through msgspec.
    except (msgspec.DecodeError, RecursionError, UnicodeError, TypeError, ValueError) as exc:
        raise errors.InvalidJob(f"invalid job spec: {_short(exc)}") from exc


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


def quarantine_result(reason: str) -> JobResult:
    """The result a quarantined (unloadable) job is failed with."""
    return JobResult(status="error", last_error=f"quarantined: {reason}")


def quarantine_message(reason: str) -> str:
    """History line for a quarantined job; its stored bytes are kept as they were."""
    return f"quarantined (row kept as stored): {reason}"


TERMINAL: Final = frozenset({JobState.SUCCEEDED, JobState.FAILED})


def exhausted_result(attempts: int) -> JobResult:
    """The result of a job that ``claim`` gave up on."""
    return JobResult(
        status="error",
        last_error=f"gave up after {attempts} attempts (max_attempts reached)",
    )


def stale_message(operation: str, epoch: int, current: int, state: str) -> str:
    """History line (and error text) for a rejected fenced write."""
    return f"stale {operation} rejected: epoch {epoch}, job is {state} at epoch {current}"


def lapsed_message(operation: str, epoch: int, expired_at: float | None) -> str:
    """History line (and error text) for a write refused because the lease lapsed."""
    return f"{operation} refused: the lease of epoch {epoch} lapsed at {expired_at}"


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return f"job_{uuid.uuid4().hex}"


def claim_message(worker_id: str, job: Job, previous_owner: str | None) -> str:
    """History line for a claim; ``job`` is the claimed snapshot (new epoch and attempt)."""
    took = f"claimed by {worker_id} (epoch {job.epoch}, attempt {job.attempts})"
    if previous_owner is None:
        return took
    return f"lease of {previous_owner} (epoch {job.epoch - 1}) expired; {took}"


def run_message(run_id: str, previous: str | None) -> str:
    """History line for ``record_run``."""
    return f"run recorded: {run_id}" + (f" (replaces {previous})" if previous else "")


def complete_message(state: JobState, result: JobResult) -> str:
    """History line for ``complete``."""
    error = f": {result.last_error}" if result.last_error else ""
    return f"{state}: run {result.status}{error}"


def check_parked(job: Job | None, job_id: str) -> str:
    """The run id of a job ``decide`` may answer; ``errors.InvalidJob`` otherwise."""
    if job is None:
        raise errors.InvalidJob(f"no job {job_id}")
    if job.state != JobState.WAITING_APPROVAL or job.run_id is None:
        raise errors.InvalidJob(f"job {job_id} is {job.state}, not waiting for an approval")
    return job.run_id


def decided_message(decisions: Mapping[str, str]) -> str:
    """History line for ``decide``."""
    said = ", ".join(f"{call} ({output})" for call, output in decisions.items())
    return f"decision on {said} stored; queued again"


def check_final(state: JobState) -> None:
    """``complete`` takes SUCCEEDED or FAILED only."""
    if state not in TERMINAL:
        raise ValueError(f"complete: state must be succeeded or failed, not {state}")


class JobStore(Protocol):
    """Durable jobs and the tool-output ledger; every method is a short atomic transaction."""

    async def __aenter__(self) -> Self:
        """Open (create the schema if needed); raises ``errors.StoreError`` naming the path."""
        ...

    async def __aexit__(self, *exc_info: object) -> None:
        """Close."""
        ...

    async def enqueue(self, spec: JobSpec, *, queueing_lock: str | None = None) -> str:
        """Store a new QUEUED job and return its id.

        Raises ``errors.InvalidJob`` for a malformed spec and ``errors.AlreadyEnqueued`` while
        another queued job holds ``queueing_lock``.
        """
        ...

    async def claim(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        max_attempts: int | None = None,
        now: float | None = None,
    ) -> Job | None:
        """Take the oldest claimable job, or None.

        Claimable: QUEUED, or RUNNING with an expired lease, and no other job on its thread
        RUNNING under a live lease. The claim sets state RUNNING, the lease, ``epoch + 1`` and
        ``attempts + 1``. A job that already had ``max_attempts`` attempts ends FAILED instead,
        and that FAILED snapshot is returned (not claimed): the caller cancels the run it may
        have left holding its thread, then claims again. A row it cannot load is quarantined
        and skipped, never returned (see "Quarantine" above).
        """
        ...

    async def heartbeat(
        self, job_id: str, epoch: int, *, lease_seconds: float, now: float | None = None
    ) -> bool:
        """Extend the lease; False when the claim is gone (the caller must stop the job)."""
        ...

    async def heartbeat_many(
        self,
        leases: Sequence[tuple[str, int]],
        *,
        lease_seconds: float,
        now: float | None = None,
    ) -> set[str]:
        """Extend many leases ``(job_id, epoch)`` in one transaction; the ids still held."""
        ...

    async def record_thread(self, job_id: str, epoch: int, thread_id: str) -> None:
        """Record the job's new thread (fenced). A different thread already recorded is an error."""
        ...

    async def record_run(self, job_id: str, epoch: int, run_id: str) -> None:
        """Record the job's run the moment it exists (fenced); a later run replaces it."""
        ...

    async def release(self, job_id: str, epoch: int) -> None:
        """Give the job back (fenced): QUEUED at once, lease cleared, the attempt not counted."""
        ...

    async def complete(self, job_id: str, epoch: int, state: JobState, result: JobResult) -> None:
        """End the job SUCCEEDED or FAILED with its result (fenced)."""
        ...

    async def get(self, job_id: str) -> Job | None:
        """One job, or None."""
        ...

    async def list_jobs(self, *, state: JobState | None = None, limit: int = 100) -> list[Job]:
        """Jobs, newest first."""
        ...

    async def history(self, job_id: str) -> list[JobEvent]:
        """The job's log, oldest first (empty for an unknown job)."""
        ...

    async def append_history(self, job_id: str, epoch: int, message: str) -> None:
        """Add a line to the job's log, tagged with the writer's epoch (not fenced)."""
        ...

    async def counts(self) -> dict[JobState, int]:
        """Jobs per state (every state present), for queue-depth metrics."""
        ...

    async def save_output(
        self, job_id: str, epoch: int, run_id: str, tool_call_id: str, output: str
    ) -> None:
        """Store a tool output before it is submitted (fenced by the job's epoch).

        A record for the same ``(run_id, tool_call_id)`` is replaced only by a newer epoch;
        within one epoch the first write stays.
        """
        ...

    async def outputs(self, run_id: str) -> dict[str, str]:
        """The saved outputs of a run: tool call id → output."""
        ...

    async def check_claim(self, job_id: str, epoch: int, *, now: float | None = None) -> bool:
        """True while ``(job_id, epoch)`` is the job's current claim: RUNNING at this epoch
        with a lease unexpired at ``now``. Asked before side effects (a run, a tool round)."""
        ...

    async def begin_calls(
        self,
        job_id: str,
        epoch: int,
        run_id: str,
        tool_call_ids: Sequence[str],
        *,
        now: float | None = None,
    ) -> dict[str, int]:
        """Record that these calls are about to run under this claim.

        Fenced like ``save_output``, and refused with ``errors.LeaseLost`` also when the lease
        has lapsed at ``now``. Returns each call's attempt number (1 the first time it is
        begun, n + 1 after n earlier begins); calls that already have an output are left alone
        and are not in the result.
        """
        ...

    async def mark_submitted(
        self, job_id: str, epoch: int, run_id: str, tool_call_ids: Sequence[str]
    ) -> None:
        """Record that the server accepted these calls' outputs (fenced)."""
        ...

    async def calls(self, run_id: str) -> dict[str, CallRecord]:
        """The ledger of a run by tool call id: begun, saved and submitted calls."""
        ...

    async def park(self, job_id: str, epoch: int, message: str) -> None:
        """Leave a running job WAITING_APPROVAL (fenced): lease cleared, the attempt not
        counted, ``message`` (which calls wait) in its history."""
        ...

    async def decide(self, job_id: str, decisions: Mapping[str, str]) -> None:
        """A human's decisions on a parked job's calls (call id: ledger output): stored in the
        ledger like tool outputs (for the job's run, at its epoch; one already stored stays)
        and the job QUEUED again, atomically. Raises ``errors.InvalidJob`` unless the job is
        WAITING_APPROVAL with a run."""
        ...
