"""run-orchestrator: drive Assistants-API runs to their end, answering tool calls with your tools.

::

    from orchestrator import Orchestrator, tool

    @tool
    def get_weather(city: str) -> str:
        ...  # its docstring becomes the tool's description for the model

    async with Orchestrator() as orch:
        result = await orch.run(thread_id=..., assistant_id=...)
"""

from orchestrator.config import Config
from orchestrator.driver import RunResult
from orchestrator.emulator import Emulator
from orchestrator.errors import APIError, OrchestratorError
from orchestrator.orchestrator import Orchestrator
from orchestrator.protocols.assistants.client import AssistantsClient
from orchestrator.tools import ToolContext, ToolRegistry, tool

__all__ = [
    "APIError",
    "AssistantsClient",
    "Config",
    "Emulator",
    "Orchestrator",
    "OrchestratorError",
    "RunResult",
    "ToolContext",
    "ToolRegistry",
    "tool",
]
