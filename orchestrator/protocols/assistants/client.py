"""``AssistantsClient``: typed async access to the Assistants runs API.

Every method sends one logical request through the transport (flavour headers, rate limit,
retries, error translation) and decodes the answer straight into a struct. The ``*_response``
variants also return the ``x-request-id`` and ``openai-poll-after-ms`` headers the driver uses.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET

from orchestrator.http import api_client, transport
from orchestrator.protocols.assistants import models, streaming

__all__ = ["AssistantsClient", "RequestObserver", "Response"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: A decoded body with ``status``, ``request_id`` and ``poll_after_ms``.
Response = transport.Response
#: Receives ``request_finished`` / ``request_retried`` callbacks (metrics).
RequestObserver = transport.RequestObserver

_Body = TypeVar("_Body", models.CreateRun, models.CreateThreadAndRun)
_Item = TypeVar("_Item", models.Run, models.RunStep, models.Message, models.Assistant)


def _run_path(thread_id: str, run_id: str) -> str:
    return f"/threads/{transport.segment(thread_id)}/runs/{transport.segment(run_id)}"


def _not_streaming(body: _Body) -> _Body:
    return msgspec.structs.replace(body, stream=UNSET) if body.stream is True else body


async def _all_pages(
    fetch: Callable[[str | None], Awaitable[models.ListResponse[_Item]]],
) -> AsyncIterator[_Item]:
    after: str | None = None
    while True:
        page = await fetch(after)
        for item in page.data:
            yield item
        if not page.has_more or not page.data:
            return
        after = page.data[-1].id


class AssistantsClient(api_client.ApiClient):
    """Async client for the runs endpoints (and the few others a worker needs).

    Use ``async with AssistantsClient(api, retry, api_key=...) as client``: it owns one aiohttp
    session, closed on exit. A ``session`` passed in stays the caller's (never closed here; its
    connector sets the connection limit). ``limiter`` replaces the token bucket built from
    ``api.max_requests_per_second``, e.g. to share one bucket between clients. ``base_url`` is a
    shortcut over ``api.base_url``: ``AssistantsClient(base_url=..., api_key=...)``;
    ``credential`` (Entra ID, bearer tokens...) replaces ``api_key`` when given.
    """

    # --- runs ------------------------------------------------------------------------------

    async def create_run_response(
        self, thread_id: str, body: models.CreateRun, *, retry: bool = True
    ) -> Response[models.Run]:
        """Start a run on a thread.

        ``retry=False`` makes one attempt (see ``Transport.request``): the driver uses it to
        find out, by the run's metadata reference, whether a failed attempt took effect.
        """
        path = f"/threads/{transport.segment(thread_id)}/runs"
        data = models.encode(_not_streaming(body))
        return await self._transport.request(
            "create_run", "POST", path, models.Run, body=data, retry=retry
        )

    async def create_run(self, thread_id: str, body: models.CreateRun) -> models.Run:
        """Start a run on a thread."""
        return (await self.create_run_response(thread_id, body)).data

    async def create_thread_and_run_response(
        self, body: models.CreateThreadAndRun
    ) -> Response[models.Run]:
        """Create a thread and start a run on it."""
        data = models.encode(_not_streaming(body))
        return await self._transport.request(
            "create_thread_and_run", "POST", "/threads/runs", models.Run, body=data
        )

    async def create_thread_and_run(self, body: models.CreateThreadAndRun) -> models.Run:
        """Create a thread and start a run on it."""
        return (await self.create_thread_and_run_response(body)).data

    async def retrieve_run_response(self, thread_id: str, run_id: str) -> Response[models.Run]:
        """Read a run as it is now."""
        path = _run_path(thread_id, run_id)
        return await self._transport.request("retrieve_run", "GET", path, models.Run)

    async def retrieve_run(self, thread_id: str, run_id: str) -> models.Run:
        """Read a run as it is now."""
        return (await self.retrieve_run_response(thread_id, run_id)).data

    async def list_runs(
        self,
        thread_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        before: str | None = None,
    ) -> models.ListRunsResponse:
        """One page of a thread's runs."""
        path = f"/threads/{transport.segment(thread_id)}/runs"
        query = transport.list_query(limit=limit, order=order, after=after, before=before)
        resp = await self._transport.request(
            "list_runs", "GET", path, models.ListRunsResponse, query=query
        )
        return resp.data

    def iter_runs(
        self, thread_id: str, *, limit: int | None = None, order: str | None = None
    ) -> AsyncIterator[models.Run]:
        """Every run of a thread, page after page."""
        return _all_pages(
            lambda after: self.list_runs(thread_id, limit=limit, order=order, after=after)
        )

    async def modify_run(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str] | None
    ) -> models.Run:
        """Replace a run's metadata (None sends ``null``)."""
        body = models.encode(models.ModifyRun(dict(metadata) if metadata is not None else None))
        path = _run_path(thread_id, run_id)
        resp = await self._transport.request("modify_run", "POST", path, models.Run, body=body)
        return resp.data

    async def cancel_run(self, thread_id: str, run_id: str) -> models.Run:
        """Ask the server to cancel a run (normally answered with ``cancelling``)."""
        path = _run_path(thread_id, run_id) + "/cancel"
        return (await self._transport.request("cancel_run", "POST", path, models.Run)).data

    async def submit_tool_outputs_response(
        self,
        thread_id: str,
        run_id: str,
        outputs: Sequence[models.ToolOutput],
        *,
        retry: bool = True,
    ) -> Response[models.Run]:
        """Answer a ``requires_action`` run with all its tool outputs in one request.

        A retried submit whose first attempt went through is refused with a 400; the driver
        sends with ``retry=False`` and decides from the run itself (``recovery``).
        """
        path = _run_path(thread_id, run_id) + "/submit_tool_outputs"
        body = models.encode(models.SubmitToolOutputs(tool_outputs=list(outputs)))
        return await self._transport.request(
            "submit_tool_outputs", "POST", path, models.Run, body=body, retry=retry
        )

    async def submit_tool_outputs(
        self, thread_id: str, run_id: str, outputs: Sequence[models.ToolOutput]
    ) -> models.Run:
        """Answer a ``requires_action`` run (see ``submit_tool_outputs_response``)."""
        return (await self.submit_tool_outputs_response(thread_id, run_id, outputs)).data

    async def submit_tool_approvals_response(
        self,
        thread_id: str,
        run_id: str,
        approvals: Sequence[models.ToolApproval],
        *,
        retry: bool = True,
    ) -> Response[models.Run]:
        """Foundry: answer a ``submit_tool_approval`` action (through the same endpoint as
        tool outputs; ``retry`` as for ``submit_tool_outputs_response``)."""
        path = _run_path(thread_id, run_id) + "/submit_tool_outputs"
        body = models.encode(models.SubmitToolApprovals(tool_approvals=list(approvals)))
        return await self._transport.request(
            "submit_tool_approvals", "POST", path, models.Run, body=body, retry=retry
        )

    async def submit_tool_approvals(
        self, thread_id: str, run_id: str, approvals: Sequence[models.ToolApproval]
    ) -> models.Run:
        """Foundry: answer a ``submit_tool_approval`` action (``..._response`` without headers)."""
        return (await self.submit_tool_approvals_response(thread_id, run_id, approvals)).data

    def submit_tool_approvals_stream(
        self,
        thread_id: str,
        run_id: str,
        approvals: Sequence[models.ToolApproval],
        *,
        retry: bool = True,
    ) -> contextlib.AbstractAsyncContextManager[streaming.EventStream]:
        """Foundry: submit approval decisions and follow the resumed run's events."""
        path = _run_path(thread_id, run_id) + "/submit_tool_outputs"
        body = models.SubmitToolApprovals(tool_approvals=list(approvals), stream=True)
        return self._stream("submit_tool_approvals_stream", path, models.encode(body), retry=retry)

    async def list_run_steps(
        self,
        thread_id: str,
        run_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        after: str | None = None,
        before: str | None = None,
        include: Sequence[str] = (),
    ) -> models.ListRunStepsResponse:
        """One page of a run's steps (``include`` adds e.g. file-search result content)."""
        path = _run_path(thread_id, run_id) + "/steps"
        query = transport.list_query(
            limit=limit, order=order, after=after, before=before, include=include
        )
        resp = await self._transport.request(
            "list_run_steps", "GET", path, models.ListRunStepsResponse, query=query
        )
        return resp.data

    def iter_run_steps(
        self,
        thread_id: str,
        run_id: str,
        *,
        limit: int | None = None,
        order: str | None = None,
        include: Sequence[str] = (),
    ) -> AsyncIterator[models.RunStep]:
        """Every step of a run, page after page."""
        return _all_pages(
            lambda after: self.list_run_steps(
                thread_id, run_id, limit=limit, order=order, after=after, include=include
            )
        )

    async def retrieve_run_step(
        self, thread_id: str, run_id: str, step_id: str, *, include: Sequence[str] = ()
    ) -> models.RunStep:
        """Read one step of a run."""
        path = _run_path(thread_id, run_id) + f"/steps/{transport.segment(step_id)}"
        resp = await self._transport.request(
            "retrieve_run_step",
            "GET",
            path,
            models.RunStep,
            query=transport.list_query(include=include),
        )
        return resp.data

    # --- assistants, threads, messages -----------------------------------------------------

    async def create_assistant(
        self,
        *,
        model: str,
        name: str | None = None,
        instructions: str | None = None,
        tools: Sequence[models.ToolDefinition] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> models.Assistant:
        """Create an assistant (arguments left out are not sent)."""
        body = models.CreateAssistant(
            model=model,
            name=UNSET if name is None else name,
            instructions=UNSET if instructions is None else instructions,
            tools=list(tools) if tools else UNSET,
            metadata=UNSET if metadata is None else dict(metadata),
        )
        resp = await self._transport.request(
            "create_assistant", "POST", "/assistants", models.Assistant, body=models.encode(body)
        )
        return resp.data

    async def retrieve_assistant(self, assistant_id: str) -> models.Assistant:
        """One assistant."""
        path = f"/assistants/{transport.segment(assistant_id)}"
        resp = await self._transport.request("retrieve_assistant", "GET", path, models.Assistant)
        return resp.data

    async def update_assistant(
        self, assistant_id: str, body: models.ModifyAssistant
    ) -> models.Assistant:
        """Change the fields ``body`` sets (``POST /assistants/{id}``)."""
        path = f"/assistants/{transport.segment(assistant_id)}"
        resp = await self._transport.request(
            "update_assistant", "POST", path, models.Assistant, body=models.encode(body)
        )
        return resp.data

    def iter_assistants(self, *, limit: int | None = None) -> AsyncIterator[models.Assistant]:
        """Every assistant, newest first, following the pages."""

        async def fetch(after: str | None) -> models.ListResponse[models.Assistant]:
            query = transport.list_query(limit=limit, order="desc", after=after)
            resp = await self._transport.request(
                "list_assistants", "GET", "/assistants", models.ListAssistantsResponse, query=query
            )
            return resp.data

        return _all_pages(fetch)

    async def create_thread(
        self,
        *,
        messages: Sequence[models.MessageRequest] = (),
        metadata: Mapping[str, str] | None = None,
        tool_resources: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> models.Thread:
        """Create a thread, optionally with its first messages."""
        body = models.CreateThread(
            messages=list(messages) if messages else UNSET,
            metadata=UNSET if metadata is None else dict(metadata),
            tool_resources=UNSET if tool_resources is None else tool_resources,
        )
        resp = await self._transport.request(
            "create_thread",
            "POST",
            "/threads",
            models.Thread,
            body=models.encode(body),
            retry=retry,
        )
        return resp.data

    async def create_message(
        self, thread_id: str, message: models.MessageRequest, *, retry: bool = True
    ) -> models.Message:
        """Add a message to a thread."""
        path = f"/threads/{transport.segment(thread_id)}/messages"
        resp = await self._transport.request(
            "create_message",
            "POST",
            path,
            models.Message,
            body=models.encode(message),
            retry=retry,
        )
        return resp.data

    async def list_messages(
        self,
        thread_id: str,
        *,
        run_id: str | None = None,
        order: str | None = None,
        limit: int | None = None,
    ) -> models.ListMessagesResponse:
        """One page of a thread's messages (``run_id``: only those a run created)."""
        path = f"/threads/{transport.segment(thread_id)}/messages"
        query = transport.list_query(limit=limit, order=order, run_id=run_id)
        resp = await self._transport.request(
            "list_messages", "GET", path, models.ListMessagesResponse, query=query
        )
        return resp.data

    # --- streaming -------------------------------------------------------------------------

    def create_run_stream(
        self, thread_id: str, body: models.CreateRun, *, retry: bool = True
    ) -> contextlib.AbstractAsyncContextManager[streaming.EventStream]:
        """Start a run and follow its events (``async with ... as events: async for ...``)."""
        path = f"/threads/{transport.segment(thread_id)}/runs"
        data = models.encode(msgspec.structs.replace(body, stream=True))
        return self._stream("create_run_stream", path, data, retry=retry)

    def create_thread_and_run_stream(
        self, body: models.CreateThreadAndRun
    ) -> contextlib.AbstractAsyncContextManager[streaming.EventStream]:
        """Create a thread, start a run and follow its events."""
        data = models.encode(msgspec.structs.replace(body, stream=True))
        return self._stream("create_thread_and_run_stream", "/threads/runs", data)

    def submit_tool_outputs_stream(
        self,
        thread_id: str,
        run_id: str,
        outputs: Sequence[models.ToolOutput],
        *,
        retry: bool = True,
    ) -> contextlib.AbstractAsyncContextManager[streaming.EventStream]:
        """Submit tool outputs and follow the resumed run's events."""
        path = _run_path(thread_id, run_id) + "/submit_tool_outputs"
        body = models.SubmitToolOutputs(tool_outputs=list(outputs), stream=True)
        return self._stream("submit_tool_outputs_stream", path, models.encode(body), retry=retry)

    @contextlib.asynccontextmanager
    async def _stream(
        self, endpoint: str, path: str, body: bytes, *, retry: bool = True
    ) -> AsyncIterator[streaming.EventStream]:
        response = await self._transport.open_stream(endpoint, path, body, retry=retry)
        events = streaming.EventStream(response, endpoint=endpoint)
        try:
            yield events
        finally:
            events.release()
