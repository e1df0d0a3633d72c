"""Test helpers for ``/responses``: waiting for a background response to end, through the
official SDK (its docs' poll loop) or through the project's ``ResponsesClient``."""

from __future__ import annotations

import anyio
from openai import AsyncOpenAI
from openai.types.responses import Response

from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import wire


async def sdk_poll(client: AsyncOpenAI, response: Response) -> Response:
    """The SDK docs' background loop: retrieve while queued or in progress."""
    with anyio.fail_after(5):
        while response.status in ("queued", "in_progress"):
            await anyio.sleep(0.01)
            response = await client.responses.retrieve(response.id)
    return response


async def until_done(client: client_mod.ResponsesClient, response_id: str) -> wire.Response:
    """Retrieve ``response_id`` until it reaches a terminal status."""
    with anyio.fail_after(5):
        while True:
            response = (await client.retrieve(response_id)).data
            if response.is_terminal:
                return response
            await anyio.sleep(0.01)
