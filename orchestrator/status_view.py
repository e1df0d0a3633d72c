"""What ``orchestrator status`` prints: job tables, one job in full, and the same as JSON."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from orchestrator.store import base as store_base

__all__ = ["counts_line", "job_detail", "job_json", "job_table", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], width: int = 48) -> str:
    """Aligned columns, each cell on one line and cut at ``width`` characters."""
    cells = [[cell(v, width) for v in row] for row in rows]
    sizes = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(n) for h, n in zip(headers, sizes, strict=True))
    out = [line, "  ".join("-" * n for n in sizes)]
    out += ["  ".join(c.ljust(n) for c, n in zip(r, sizes, strict=True)) for r in cells]
    return "\n".join(out)


def cell(value: object, width: int) -> str:
    """``value`` on one line, cut with an ellipsis past ``width`` characters."""
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def when(at: float) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def counts_line(counts: Mapping[store_base.JobState, int]) -> str:
    """``jobs: 3 queued, 1 running, ...`` over every state, zeros included."""
    parts = [f"{counts.get(state, 0)} {state.value}" for state in store_base.JobState]
    return f"jobs: {sum(counts.values())} in all: " + ", ".join(parts)


def job_table(jobs: Sequence[store_base.Job]) -> str:
    """One line per job, the reply cut to fit."""
    rows: list[tuple[Any, ...]] = []
    for job in jobs:
        result = job.result
        rows.append(
            (
                job.id,
                job.state,
                job.attempts,
                job.run_id,
                result.status if result else None,
                result.tool_calls if result else None,
                (result.reply or result.last_error) if result else None,
            )
        )
    return table(("job", "state", "tries", "run", "status", "tool calls", "reply"), rows)


def job_detail(
    job: store_base.Job,
    history: Sequence[store_base.JobEvent],
    outputs: Mapping[str, str],
) -> str:
    """One job in full: its fields, the whole reply, every stored tool output, its history."""
    result = job.result
    lines = [
        f"job        {job.id}",
        f"state      {job.state.value} (attempts: {job.attempts})",
        f"thread     {job.thread_id or '-'}",
        f"run        {job.run_id or '-'}",
        f"run status {result.status if result else '-'}",
        f"tool calls {result.tool_calls if result else 0}",
    ]
    if result is not None and result.last_error:
        lines.append(f"last error {result.last_error}")
    lines += ["", "reply:", result.reply if result and result.reply else "(none)", ""]
    lines.append(f"tool outputs ({len(outputs)}):")
    lines += [f"  {call_id}: {output}" for call_id, output in outputs.items()]
    lines.append("")
    lines.append(
        table(("time", "epoch", "event"), [(when(h.at), h.epoch, h.message) for h in history], 200)
    )
    return "\n".join(lines)


def job_json(
    job: store_base.Job,
    history: Sequence[store_base.JobEvent],
    outputs: Mapping[str, str],
) -> str:
    """The same as one JSON object: the job, its history and its stored tool outputs."""
    data = {
        "job": msgspec.to_builtins(job),
        "history": msgspec.to_builtins(list(history)),
        "tool_outputs": dict(outputs),
    }
    return msgspec.json.encode(data).decode()
