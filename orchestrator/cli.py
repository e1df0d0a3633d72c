"""The ``orchestrator`` command line: run · worker · enqueue · status · emulator · demo.

Config and logging are wired here and nowhere else; a ``ConfigError`` is printed as one line
and exits 2. With no API key and no ``api.base_url``, ``run``, ``worker`` and ``demo`` start the
bundled emulator in-process and say so first.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
from msgspec import UNSET

from orchestrator import (
    approvals,
    config,
    credentials,
    errors,
    events,
    logs,
    metrics,
    models,
    store,
    tools,
    worker,
)
from orchestrator import client as client_mod
from orchestrator import orchestrator as orch_mod
from orchestrator.store import base as store_base

EXIT_CONFIG = 2
DEMO_MODEL = "gpt-4o-mini"
#: (question, the emulator's script for the assistant's answer) of each demo job.
DEMO_JOBS: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    (
        "What time is it in Tokyo?",
        [
            {"tool_calls": [{"name": "current_time", "arguments": {"timezone": "Asia/Tokyo"}}]},
            {"message": "In Tokyo: {output:current_time}"},
        ],
    ),
    (
        "How much is (17 + 4) * 3?",
        [
            {"tool_calls": [{"name": "calculate", "arguments": {"expression": "(17 + 4) * 3"}}]},
            {"message": "(17 + 4) * 3 -> {output:calculate}"},
        ],
    ),
    (
        "Tell me about France, and what is 2 ** 10 / 4?",
        [
            {
                "tool_calls": [
                    {"name": "lookup_country", "arguments": {"name": "France"}},
                    {"name": "calculate", "arguments": {"expression": "2 ** 10 / 4"}},
                ]
            },
            {"message": "{outputs}"},
        ],
    ),
    (
        "When is 2026-01-01T12:00:00Z in New York?",
        [
            {
                "tool_calls": [
                    {
                        "name": "convert_time",
                        "arguments": {
                            "when": "2026-01-01T12:00:00Z",
                            "to_timezone": "America/New_York",
                        },
                    }
                ]
            },
            {"message": "New York: {output:convert_time}"},
        ],
    ),
    (
        "What is 6 * 7? (the model first sends broken arguments, reads the error, and retries)",
        [
            {"tool_calls": [{"name": "calculate", "arguments_raw": '{"expression": "6 * 7"'}]},
            {"tool_calls": [{"name": "calculate", "arguments": {"expression": "6 * 7"}}]},
            {"message": "after the error, 6 * 7 -> {outputs}"},
        ],
    ),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="path of config.yaml (default: defaults)")
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="drive one run and print what happens")
    p.add_argument("--assistant", help="assistant id (default with the emulator: a demo one)")
    p.add_argument("--message", required=True, help="the user's message")
    p.add_argument("--thread", help="an existing thread (default: a new one)")
    p.add_argument("--mode", choices=["poll", "stream", "auto"], help="override poll.mode")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")

    p = sub.add_parser("worker", help="claim and drive jobs until stopped")
    p.add_argument("--until-idle", action="store_true", help="exit when no job is left")

    p = sub.add_parser("enqueue", help="add jobs to the store and print their ids")
    p.add_argument("--assistant", help="assistant id of a create job")
    p.add_argument("--message", action="append", default=[], help="user message (repeatable)")
    p.add_argument("--thread", help="existing thread for a create job")
    p.add_argument("--adopt", nargs=2, metavar=("THREAD", "RUN"), help="adopt an existing run")
    p.add_argument("--lock", help="queueing lock: refuse while a queued job holds it")
    p.add_argument("--count", type=int, default=1, help="how many identical jobs")

    p = sub.add_parser("status", help="a table of jobs, or one job's history")
    p.add_argument("job", nargs="?", help="job id")
    p.add_argument("--state", choices=[s.value for s in store_base.JobState])
    p.add_argument("--limit", type=int, default=50)

    p = sub.add_parser("approve", help="decide a parked job's MCP tool approval and resume it")
    p.add_argument("job", help="a job in state waiting_approval")
    p.add_argument("calls", nargs="+", metavar="CALL", help="tool call id(s), from its status")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--allow", action="store_true", help="let the MCP call run")
    verdict.add_argument("--deny", action="store_true", help="refuse it")

    p = sub.add_parser("emulator", help="serve the local Assistants API emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    from orchestrator import emulator

    emulator.add_arguments(p)

    p = sub.add_parser("demo", help="the worker drives demo jobs against the emulator")
    p.add_argument("--jobs", type=int, default=len(DEMO_JOBS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        cfg = config.load(args.config)
        # The demo's story is its summary table; its log lines only when asked for.
        quiet = "WARNING" if args.command == "demo" else None
        logs.setup(cfg.logging, level=args.log_level or quiet)
        return anyio.run(_COMMANDS[args.command], cfg, args)
    except errors.ConfigError as exc:
        print(f"orchestrator: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except errors.OrchestratorError as exc:
        print(f"orchestrator: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# --- shared plumbing ---------------------------------------------------------------------------


@asynccontextmanager
async def _endpoint(cfg: config.Config) -> AsyncIterator[tuple[config.Config, bool]]:
    """The config to use, with the bundled emulator started when no endpoint is configured."""
    if not (cfg.uses_emulator and cfg.api_key() is None):
        yield cfg, False
        return
    from orchestrator import emulator

    async with emulator.Emulator() as emu:
        print(
            f"orchestrator: no API key and no api.base_url configured: "
            f"using the bundled emulator at {emu.base_url}",
            flush=True,
        )
        api = msgspec.structs.replace(cfg.api, base_url=emu.base_url)
        yield msgspec.structs.replace(cfg, api=api), True


def _credential(cfg: config.Config, emulated: bool) -> credentials.TokenProvider | None:
    if emulated:
        return credentials.StaticKey("emulator", header="bearer")
    return credentials.from_config(cfg.api)


async def _demo_assistant(client: client_mod.AssistantsClient, registry: tools.ToolRegistry) -> str:
    assistant = await client.create_assistant(
        model=DEMO_MODEL,
        name="run-orchestrator demo",
        instructions="Answer with the help of the tools.",
        tools=registry.definitions(),
    )
    return assistant.id


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], width: int = 48) -> str:
    cells = [[_cell(v, width) for v in row] for row in rows]
    sizes = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(n) for h, n in zip(headers, sizes, strict=True))
    out = [line, "  ".join("-" * n for n in sizes)]
    out += ["  ".join(c.ljust(n) for c, n in zip(r, sizes, strict=True)) for r in cells]
    return "\n".join(out)


def _cell(value: object, width: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


async def _stop_on_signals(w: worker.Worker) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            w.stop()


# --- commands ----------------------------------------------------------------------------------


def _describe(event: events.Event) -> str | None:
    match event:
        case events.RunCreated(run=run):
            return f"run {run.id} created on {run.thread_id}"
        case events.RunAdopted(run=run):
            return f"run {run.id} adopted"
        case events.StatusChanged(previous=previous, current=current):
            return f"status {previous or '-'} -> {current}"
        case events.ToolCallsRequested(calls=calls):
            names = ", ".join(c.function.name if c.function else c.type for c in calls)
            return f"tool calls requested: {names}"
        case events.ToolCallFinished(name=name, output=output, error_type=error, duration=d):
            state = f"error {error}" if error else "ok"
            return f"  {name} {state} in {d * 1000:.1f} ms -> {_cell(output, 80)}"
        case events.OutputsSubmitted(outputs=outputs):
            return f"submitted {len(outputs)} outputs"
        case events.StreamFallback(reason=reason):
            return f"stream fallback: {reason}"
        case events.UnknownStatus(status=status):
            return f"unknown status {status!r}; waiting"
        case events.RunFinished(outcome=outcome):
            return f"finished: {outcome}"
        case _:
            return None


async def cmd_run(cfg: config.Config, args: argparse.Namespace) -> int:
    tools.import_tool_modules(cfg.tools.modules)
    if args.mode:
        cfg = msgspec.structs.replace(cfg, poll=msgspec.structs.replace(cfg.poll, mode=args.mode))

    def show(event: events.Event) -> None:
        if args.json:
            print(events.encode_event(event).decode(), flush=True)
        elif (text := _describe(event)) is not None:
            print(text, flush=True)

    async with (
        _endpoint(cfg) as (cfg, emulated),
        orch_mod.Orchestrator(cfg, credential=_credential(cfg, emulated), handler=show) as orch,
    ):
        assistant = args.assistant
        if assistant is None:
            if not emulated:
                raise errors.ConfigError("--assistant: required unless the emulator is used")
            assistant = await _demo_assistant(orch.client, orch.registry)
        thread = args.thread or (await orch.client.create_thread()).id
        message = models.MessageRequest(role="user", content=args.message)
        result = await orch.run(thread_id=thread, assistant_id=assistant, messages=[message])
    if not args.json:
        print(f"\nreply: {result.reply or '(none)'}")
    return 0 if result.ok else 1


async def _run_worker(
    cfg: config.Config, emulated: bool, st: store_base.JobStore, *, until_idle: bool
) -> worker.Worker:
    # Thousands of runs in flight keep many objects alive between requests; with the default
    # thresholds the cyclic GC keeps walking them all and costs ~40% of the worker's CPU
    # (BENCHMARKS.md, B3). The process is ours here, so tune it here, not in the library.
    gc.set_threshold(50_000, 20, 10)
    m = metrics.Metrics()
    async with client_mod.AssistantsClient(
        cfg.api, cfg.retry, credential=_credential(cfg, emulated), observer=m
    ) as client:
        w = worker.Worker(cfg, st, client, tools.default_registry, metrics_=m)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signals, w)
            await w.run(until_idle=until_idle)
            tg.cancel_scope.cancel()
    return w


async def cmd_worker(cfg: config.Config, args: argparse.Namespace) -> int:
    tools.import_tool_modules(cfg.tools.modules)
    async with _endpoint(cfg) as (live, emulated), store.open_store(live.worker) as st:
        w = await _run_worker(live, emulated, st, until_idle=args.until_idle)
    if w.aborted:
        # A second signal means now: sync tools still running in worker threads (which the
        # interpreter would wait for) are left behind; their jobs are resumed elsewhere.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


async def cmd_enqueue(cfg: config.Config, args: argparse.Namespace) -> int:
    spec: store_base.JobSpec
    if args.adopt:
        if args.assistant or args.message:
            raise errors.InvalidJob("--adopt takes no --assistant or --message")
        spec = store_base.AdoptJob(thread_id=args.adopt[0], run_id=args.adopt[1])
    else:
        if not args.assistant:
            raise errors.InvalidJob("--assistant: required for a create job (or use --adopt)")
        messages = tuple(models.MessageRequest(role="user", content=m) for m in args.message)
        spec = store_base.CreateJob(
            assistant_id=args.assistant, thread_id=args.thread, messages=messages
        )
    async with store.open_store(cfg.worker) as st:
        for _ in range(args.count):
            print(await st.enqueue(spec, queueing_lock=args.lock))
    return 0


async def cmd_status(cfg: config.Config, args: argparse.Namespace) -> int:
    async with store.open_store(cfg.worker) as st:
        if args.job:
            job = await st.get(args.job)
            if job is None:
                raise errors.StoreError(f"no job {args.job}")
            print(_job_table([job]))
            print()
            history = await st.history(job.id)
            rows = [(_when(h.at), h.epoch, h.message) for h in history]
            print(_table(("time", "epoch", "event"), rows, width=100))
            return 0
        state = store_base.JobState(args.state) if args.state else None
        print(_job_table(await st.list_jobs(state=state, limit=args.limit)))
    return 0


async def cmd_approve(cfg: config.Config, args: argparse.Namespace) -> int:
    output = approvals.decision_output(bool(args.allow))
    async with store.open_store(cfg.worker) as st:
        for call in args.calls:
            await st.decide(args.job, call, output)
    verb = "allowed" if args.allow else "denied"
    print(f"{args.job}: {', '.join(args.calls)} {verb}; the job is queued again")
    return 0


def _when(at: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _job_table(jobs: Sequence[store_base.Job]) -> str:
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
    return _table(("job", "state", "tries", "run", "status", "tool calls", "reply"), rows)


async def cmd_emulator(cfg: config.Config, args: argparse.Namespace) -> int:
    from orchestrator import emulator

    await emulator.serve(emulator.settings_from_args(args), args.host, args.port)
    return 0


async def cmd_demo(cfg: config.Config, args: argparse.Namespace) -> int:
    tools.import_tool_modules(cfg.tools.modules)
    with tempfile.TemporaryDirectory(prefix="orchestrator-demo-") as tmp:
        wcfg = msgspec.structs.replace(
            cfg.worker,
            store="sqlite",
            sqlite_path=str(Path(tmp) / "demo.sqlite3"),
            health="127.0.0.1:0",
        )
        cfg = msgspec.structs.replace(cfg, worker=wcfg)
        async with _endpoint(cfg) as (cfg, emulated), store.open_store(cfg.worker) as st:
            async with client_mod.AssistantsClient(
                cfg.api, cfg.retry, credential=_credential(cfg, emulated)
            ) as client:
                assistant = await _demo_assistant(client, tools.default_registry)
            ids = []
            for i in range(args.jobs):
                question, answer = DEMO_JOBS[i % len(DEMO_JOBS)]
                spec = store_base.CreateJob(
                    assistant_id=assistant,
                    messages=(models.MessageRequest(role="user", content=question),),
                    overrides=store_base.RunOverrides(
                        metadata={"emulator_script": json.dumps(answer)} if emulated else UNSET
                    ),
                )
                ids.append(await st.enqueue(spec))
            print(f"orchestrator: enqueued {len(ids)} demo jobs; the worker runs until idle")
            await _run_worker(cfg, emulated, st, until_idle=True)
            jobs = [job for job_id in ids if (job := await st.get(job_id)) is not None]
        print()
        print(_job_table(jobs))
    failed = [j for j in jobs if j.state != store_base.JobState.SUCCEEDED]
    return 1 if failed else 0


_COMMANDS = {
    "run": cmd_run,
    "worker": cmd_worker,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
    "approve": cmd_approve,
    "emulator": cmd_emulator,
    "demo": cmd_demo,
}


if __name__ == "__main__":
    sys.exit(main())
