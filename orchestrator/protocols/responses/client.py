"""``ResponsesClient``: typed async access to ``/responses`` over the shared ``Transport``.

Create (background or foreground, plain or streamed), retrieve, cancel, stream resume with
``starting_after``, and list (where the server has a listing: Foundry, the emulator). A create
whose body carries a client id in ``metadata[CLIENT_ID_KEY]`` is safe to retry: before each
retried attempt the client looks for the response an earlier attempt may have made.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Final

import msgspec
from msgspec import UNSET

from orchestrator import codec, errors, recovery
from orchestrator.http import api_client, transport
from orchestrator.protocols.assistants import models
from orchestrator.protocols.responses import stream as stream_mod
from orchestrator.protocols.responses import wire

__all__ = ["CLIENT_ID_KEY", "ResponsesClient"]

log = logging.getLogger(__name__)

#: Metadata key holding the client-generated id of each response we create (the same key as
#: runs' ``recovery.REF_KEY``).
CLIENT_ID_KEY: Final = recovery.REF_KEY
#: Responses per page when looking for our own.
_RECOVERY_PAGE: Final = 100

ResponseList = models.ListResponse[wire.Response]


def _path(response_id: str) -> str:
    return f"/responses/{transport.segment(response_id)}"


def client_id(body: wire.CreateResponse) -> str | None:
    """The client id a create body carries, if any."""
    if body.metadata is UNSET:
        return None
    return body.metadata.get(CLIENT_ID_KEY)


class ResponsesClient(api_client.ApiClient):
    """Async client for the Responses endpoints; ``async with`` owns one aiohttp session (a
    ``session`` passed in stays the caller's). Arguments as ``api_client.ApiClient``'s."""

    # --- plain requests ---------------------------------------------------------------------

    async def create(
        self, body: wire.CreateResponse, *, retry: bool = True
    ) -> transport.Response[wire.Response]:
        """Create a response (``background: true`` answers at once with it ``queued``).

        With a client id in the metadata, a failed attempt whose outcome is unknown is followed
        by a look for the response it may have made (``recovery.exactly_once``) before any
        retry. ``retry=False``: one attempt (``retrying.Retryable`` when worth another).
        """
        if body.stream is True:
            body = msgspec.structs.replace(body, stream=UNSET)
        data = codec.encode(body)

        async def send() -> transport.Response[wire.Response]:
            return await self._transport.request(
                "create_response", "POST", "/responses", wire.Response, body=data, retry=False
            )

        cid = client_id(body)
        if not retry:
            return await send()
        if cid is None:
            return await self._transport.request(
                "create_response", "POST", "/responses", wire.Response, body=data
            )
        started = time.time()

        async def find() -> transport.Response[wire.Response] | None:
            found = await self.find(cid, since=started)
            return None if found is None else transport.Response(found, 200, None, None)

        return await recovery.exactly_once(self._retry, send, find, what="create_response")

    async def retrieve(self, response_id: str) -> transport.Response[wire.Response]:
        """Read a response as it is now."""
        return await self._transport.request(
            "retrieve_response", "GET", _path(response_id), wire.Response
        )

    async def cancel(self, response_id: str) -> wire.Response:
        """Cancel a background response (answered with it ``cancelled``, or as it ended)."""
        path = _path(response_id) + "/cancel"
        return (await self._transport.request("cancel_response", "POST", path, wire.Response)).data

    async def list_responses(
        self, *, limit: int | None = None, order: str | None = None, after: str | None = None
    ) -> ResponseList:
        """One page of stored responses (Foundry and the emulator; OpenAI has no listing)."""
        query = transport.list_query(limit=limit, order=order, after=after)
        resp = await self._transport.request(
            "list_responses", "GET", "/responses", ResponseList, query=query
        )
        return resp.data

    async def find(self, cid: str, *, since: float) -> wire.Response | None:
        """The response carrying client id ``cid`` created since ``since`` (minus clock skew),
        newest first, page after page; None when there is none or the server has no listing."""
        after: str | None = None
        while True:
            try:
                page = await self.list_responses(limit=_RECOVERY_PAGE, order="desc", after=after)
            except (errors.NotFoundError, errors.BadRequestError) as exc:
                log.info("no response listing to recover from (%s)", exc.message)
                return None
            except errors.APIError as exc:
                if exc.status == 405:
                    return None
                raise
            for item in page.data:
                if (item.metadata or {}).get(CLIENT_ID_KEY) == cid:
                    return item
                if item.created_at < since - recovery.CLOCK_SKEW:
                    return None  # newest first: older ones cannot be ours
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id

    # --- streams ----------------------------------------------------------------------------

    def create_stream(
        self, body: wire.CreateResponse
    ) -> contextlib.AbstractAsyncContextManager[stream_mod.ResponseStream]:
        """Create a response and follow its events (``async with ... as events``)."""
        data = codec.encode(msgspec.structs.replace(body, stream=True))
        return self._stream("create_response_stream", "/responses", data, method="POST")

    def retrieve_stream(
        self, response_id: str, *, starting_after: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[stream_mod.ResponseStream]:
        """Follow a background response's events, from the start or after ``starting_after``."""
        query = [("stream", "true")]
        if starting_after is not None:
            query.append(("starting_after", str(starting_after)))
        return self._stream(
            "retrieve_response_stream",
            _path(response_id),
            None,
            method="GET",
            query=query,
            starting_after=starting_after,
        )

    @contextlib.asynccontextmanager
    async def _stream(
        self,
        endpoint: str,
        path: str,
        body: bytes | None,
        *,
        method: str,
        query: transport.Query = (),
        starting_after: int | None = None,
    ) -> AsyncIterator[stream_mod.ResponseStream]:
        response = await self._transport.open_stream(
            endpoint, path, body, method=method, query=query
        )
        events = stream_mod.ResponseStream(
            response, endpoint=endpoint, starting_after=starting_after
        )
        try:
            yield events
        finally:
            events.release()
