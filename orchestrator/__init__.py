"""run-orchestrator: drive AI runs to their end (Assistants runs, Responses background chains),
answering their tool calls with your tools.

::

    from orchestrator import Orchestrator, tool

    @tool
    def get_weather(city: str) -> str:
        ...  # its docstring becomes the tool's description for the model

    async with Orchestrator() as orch:
        result = await orch.run(thread_id=..., assistant_id=...)   # an Assistants run
        result = await orch.respond(model="gpt-4o", input="...")    # a Responses chain
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
