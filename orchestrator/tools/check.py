"""Before a run starts: does the registry answer every function tool the model may call?

A tool the assistant offers but no module registered becomes an ``unknown_tool`` error output
at run time, and the run still "completes". ``ToolCheck`` names such tools up front
(``tools.check_tools``: ``warn`` logs them, ``error`` refuses the run, ``off`` skips this).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from msgspec import UNSET, UnsetType

from orchestrator import errors, tools
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models

__all__ = ["ToolCheck"]

log = logging.getLogger(__name__)


class ToolCheck:
    """Compares an assistant's (or a run's) function tools with a registry.

    An assistant's tools are fetched once per assistant id and remembered; a warning is logged
    once per assistant and set of missing tools.
    """

    def __init__(self, registry: tools.ToolRegistry, mode: str = "warn") -> None:
        self.registry = registry
        self.mode = mode
        self._assistants: dict[str, tuple[str, ...]] = {}
        self._warned: set[tuple[str, tuple[str, ...]]] = set()

    async def check(
        self,
        client: client_mod.AssistantsClient,
        assistant_id: str,
        run_tools: Sequence[models.ToolDefinition] | None | UnsetType = UNSET,
    ) -> list[str]:
        """The missing tool names (logged or raised as ``tools.check_tools`` says)."""
        if self.mode == "off":
            return []
        if isinstance(run_tools, UnsetType) or run_tools is None:
            names = self._assistants.get(assistant_id)
            if names is None:
                try:
                    assistant = await client.retrieve_assistant(assistant_id)
                except errors.APIError as exc:
                    # The create that follows reports a missing assistant properly.
                    log.debug("tool check skipped: %s", exc, extra={"assistant_id": assistant_id})
                    return []
                names = self._assistants[assistant_id] = _function_names(assistant.tools)
        else:
            names = _function_names(run_tools)
        missing = sorted(n for n in names if n not in self.registry)
        if missing:
            self._report(assistant_id, tuple(missing))
        return missing

    def _report(self, assistant_id: str, missing: tuple[str, ...]) -> None:
        text = (
            f"assistant {assistant_id} offers tools no loaded module registers: "
            f"{', '.join(missing)} (calls to them fail with unknown_tool; add their modules to "
            "tools.modules, or run `orchestrator assistant sync`)"
        )
        if self.mode == "error":
            raise errors.ConfigError(f"{text}; refused by tools.check_tools: error")
        if (assistant_id, missing) not in self._warned:
            self._warned.add((assistant_id, missing))
            log.warning(text, extra={"assistant_id": assistant_id, "action": "tool_check"})


def _function_names(definitions: Sequence[models.ToolDefinition]) -> tuple[str, ...]:
    return tuple(d.function.name for d in definitions if d.type == "function" and d.function)
