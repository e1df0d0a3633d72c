"""An assistant whose tools are exactly a registry's: created or updated by name.

``orchestrator assistant sync --name N --model M`` and ``sync_assistant()`` keep the tools the
model is offered and the tools the worker can answer from drifting apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from msgspec import UNSET

from orchestrator import tools
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models

__all__ = ["SyncResult", "sync_assistant"]


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``sync_assistant`` did."""

    assistant: models.Assistant
    #: ``created``, ``updated`` or ``unchanged``.
    action: str


async def sync_assistant(
    client: client_mod.AssistantsClient,
    registry: tools.ToolRegistry,
    *,
    name: str,
    model: str,
    instructions: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> SyncResult:
    """Create the assistant called ``name``, or update the newest one of that name.

    Its tools become the registry's function tools (other tool types, e.g. ``file_search``, are
    kept); ``model``, and ``instructions`` / ``metadata`` when given, are set too.
    """
    wanted = registry.definitions()
    found: models.Assistant | None = None
    async for assistant in client.iter_assistants(limit=100):
        if assistant.name == name:
            found = assistant
            break
    if found is None:
        created = await client.create_assistant(
            model=model, name=name, instructions=instructions, tools=wanted, metadata=metadata
        )
        return SyncResult(assistant=created, action="created")
    kept = [t for t in found.tools if t.type != "function"]
    body = models.ModifyAssistant(
        model=model,
        tools=kept + wanted,
        instructions=UNSET if instructions is None else instructions,
        metadata=UNSET if metadata is None else dict(metadata),
    )
    same = (
        found.model == model
        and models.encode(found.tools) == models.encode(body.tools)
        and (instructions is None or found.instructions == instructions)
        and (metadata is None or found.metadata == dict(metadata))
    )
    if same:
        return SyncResult(assistant=found, action="unchanged")
    updated = await client.update_assistant(found.id, body)
    return SyncResult(assistant=updated, action="updated")
