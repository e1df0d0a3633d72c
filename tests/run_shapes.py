"""Objects as a hand-written test server shows them (for what the emulator does not do)."""

from __future__ import annotations

from typing import Any


def run_json(status: str, **fields: Any) -> dict[str, Any]:
    """A run (``run_1`` on ``thread_1``) in ``status``; ``fields`` add or replace keys."""
    return {
        "id": "run_1",
        "object": "thread.run",
        "created_at": 1,
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "status": status,
        **fields,
    }
