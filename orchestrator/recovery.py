"""Run identity, and finding out what happened after a request whose outcome is unknown.

A POST that fails without a clear answer (connection lost, timeout, 5xx, 429, a 2xx body that
cannot be read) may or may not have taken effect on the server. Sending it again blindly makes
two runs, two messages, or a submit that lands on the run's next round. So every object the
orchestrator creates carries a client-generated reference in its metadata (``REF_KEY``), and
before any retry the driver asks the server: an object carrying our reference is ours, whatever
its status, and is used instead of creating another; nothing else is ever adopted. A submit is
judged by the run itself: while it still asks for exactly our call ids, the outputs did not
land; once it shows anything else, they did (or the run ended).

This is run-level policy: the transport makes one attempt (``retry=False``) and says whether the
failure is worth another try (``retrying.Retryable``); the retry loop and the look-up live here.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Final, TypeVar

from orchestrator import config, errors
from orchestrator.http import retrying
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models

__all__ = [
    "CLOCK_SKEW",
    "REF_KEY",
    "OutcomeUnknown",
    "exactly_once",
    "find_message",
    "find_run",
    "new_ref",
    "ref_of",
    "still_asking",
    "tagged",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Metadata key holding the client-generated reference of a created object.
REF_KEY: Final = "orchestrator_ref"
#: Seconds of clock difference tolerated between us and the server when looking back.
CLOCK_SKEW: Final = 300.0
#: Items per page when looking for our object (newest first: it is near the top).
_PAGE: Final = 20

#: Failures after which a POST may or may not have taken effect.
OutcomeUnknown: Final = (errors.TransientError, errors.DecodeError)


def new_ref() -> str:
    """A fresh reference for one logical create (kept across its retries)."""
    return f"ref_{uuid.uuid4().hex}"


def ref_of(metadata: Mapping[str, str] | None) -> str | None:
    """The reference an object carries, if any."""
    return metadata.get(REF_KEY) if metadata else None


def tagged(metadata: Mapping[str, str] | None, ref: str) -> dict[str, str]:
    """``metadata`` plus our reference (the API allows 16 keys; ours takes one)."""
    return {**(metadata or {}), REF_KEY: ref}


async def exactly_once(
    retry: config.RetryConfig,
    send: Callable[[], Awaitable[T]],
    find: Callable[[], Awaitable[T | None]],
    *,
    what: str,
) -> T:
    """``send`` until it succeeds, asking ``find`` before every retry whether an earlier
    attempt took effect; also after the last attempt fails (its request may have landed).

    ``send`` makes one attempt and raises ``retrying.Retryable`` when it may be tried again
    (an unreadable answer counts too); other errors are final, though one that leaves the
    outcome unknown (a 5xx marked not retryable, say) is still looked up. ``find`` returns the
    object an earlier attempt made, or None.
    """
    policy = retrying.RetryPolicy(retry)

    async def attempt(n: int) -> T:
        if n > 1 and (found := await find()) is not None:
            log.info("%s: an earlier attempt took effect; using its result", what)
            return found
        try:
            return await send()
        except errors.DecodeError as exc:  # a 2xx we could not read: it did take effect
            raise retrying.Retryable(exc) from exc

    def on_retry(attempt: int, error: errors.OrchestratorError, delay: float) -> None:
        log.info(
            "%s: attempt %d failed (%s: %s); looking for its result before retrying in %.3f s",
            what,
            attempt,
            type(error).__name__,
            error,
            delay,
            extra={"action": "recover", "attempt": attempt},
        )

    try:
        return await policy.call(attempt, on_retry)
    except OutcomeUnknown:
        found = await find()
        if found is None:
            raise
        log.info("%s: the last attempt took effect; using its result", what)
        return found


async def find_run(
    client: client_mod.AssistantsClient, thread_id: str, ref: str, since: float
) -> client_mod.Response[models.Run] | None:
    """The run on ``thread_id`` carrying ``ref`` (created after ``since``), whatever its
    status, or None."""
    async for run in client.iter_runs(thread_id, order="desc", limit=_PAGE):
        if ref_of(run.metadata) == ref:
            return client_mod.Response(run, 200, None, None)
        if run.created_at < since - CLOCK_SKEW:
            break  # newest first: older runs cannot be ours
    return None


async def find_message(
    client: client_mod.AssistantsClient, thread_id: str, ref: str, since: float
) -> models.Message | None:
    """The message on ``thread_id`` carrying ``ref``, or None."""
    page = await client.list_messages(thread_id, order="desc", limit=_PAGE)
    for message in page.data:
        if ref_of(message.metadata) == ref:
            return message
        if message.created_at < since - CLOCK_SKEW:
            break
    return None


def still_asking(run: models.Run, call_ids: Collection[str]) -> bool:
    """The run still waits for exactly these calls: a submit of them has not landed."""
    asking = {c.id for c in (*run.tool_calls, *run.approval_calls)}
    return run.requires_action and asking == set(call_ids)


def since_now() -> float:
    """The moment a logical create starts (what ``find_*`` looks back to)."""
    return time.time()
