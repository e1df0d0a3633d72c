"""The public surface: a small, sorted, importable ``__all__``."""

from __future__ import annotations

import orchestrator


def test_all_is_sorted_and_importable() -> None:
    names = orchestrator.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(orchestrator, name) is not None


def test_public_surface_is_what_the_docs_promise() -> None:
    assert set(orchestrator.__all__) == {
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
    }
