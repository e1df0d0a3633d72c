"""The ``orchestrator`` command line: run · worker · enqueue · status · assistant · emulator · demo.

Config and logging are wired here and nowhere else; a ``ConfigError`` is printed as one line
and exits 2. The config file is ``--config``, else ``$ORCHESTRATOR_CONFIG``, else
``./config.yaml`` when it exists; the first log line says which. With no API key and no
``api.base_url``, ``run``, ``worker`` and ``demo`` start the bundled emulator in-process and say
so first (on stderr: stdout carries only results).
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
    errors,
    events,
    logs,
    metrics,
    responses_driver,
    store,
    tools,
    tracing,
    worker,
)
from orchestrator import driver as driver_mod
from orchestrator import orchestrator as orch_mod
from orchestrator import status_view as view
from orchestrator.http import credentials
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models
from orchestrator.protocols.assistants import sync as assistants
from orchestrator.protocols.responses import client as responses_client
from orchestrator.protocols.responses import wire
from orchestrator.store import base as store_base

log = logging.getLogger("orchestrator.cli")

EXIT_CONFIG = 2
#: Exit codes after SIGINT and SIGTERM, as a shell reports a process killed by them.
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
PROTOCOLS = ("assistants", "responses")
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


def _int64(text: str) -> int:
    """An argparse type: an int that fits a signed 64-bit column."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be within 0..2**63-1, got {text}")
    return value


def _port(text: str) -> int:
    """An argparse type: a TCP port."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is within 0..65535, got {text}")
    return value


def _mcp_server(text: str) -> wire.Tool:
    """An argparse type: ``LABEL=URL``, an MCP server whose calls need approval."""
    label, _, url = text.partition("=")
    if not label or not url.startswith(("https://", "http://")):
        raise argparse.ArgumentTypeError(f"expected LABEL=https://..., got {text!r}")
    return wire.Tool(type="mcp", server_label=label, server_url=url, require_approval="always")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=None,
        help=f"path of the config file (default: ${config.CONFIG_ENV}, else ./config.yaml if "
        "it exists, else built-in defaults)",
    )
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="drive one run and print what happens")
    p.add_argument("--assistant", help="assistant id (default with the emulator: a demo one)")
    p.add_argument("--message", required=True, help="the user's message")
    p.add_argument("--thread", help="an existing thread (default: a new one)")
    p.add_argument("--mode", choices=["poll", "stream", "auto"], help="override poll.mode")
    p.add_argument("--protocol", choices=PROTOCOLS, default="assistants", help="wire protocol")
    p.add_argument("--model", help=f"model of a Responses run (default: {DEMO_MODEL})")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")

    p = sub.add_parser("worker", help="claim and drive jobs until stopped")
    p.add_argument("--until-idle", action="store_true", help="exit when no job is left")

    p = sub.add_parser("enqueue", help="add jobs to the store and print their ids")
    p.add_argument("--assistant", help="assistant id of a create job")
    p.add_argument("--message", action="append", default=[], help="user message (repeatable)")
    p.add_argument("--thread", help="existing thread for a create job")
    p.add_argument("--adopt", nargs=2, metavar=("THREAD", "RUN"), help="adopt an existing run")
    p.add_argument("--protocol", choices=PROTOCOLS, default="assistants", help="wire protocol")
    p.add_argument("--model", help="model of a Responses job")
    p.add_argument("--agent", help="Foundry agent name of a Responses job (instead of --model)")
    p.add_argument(
        "--mcp",
        action="append",
        default=[],
        type=_mcp_server,
        metavar="LABEL=URL",
        help="an MCP server a Responses job offers (repeatable); its calls are approved by "
        "approvals.*",
    )
    p.add_argument("--lock", help="queueing lock: refuse while a queued job holds it")
    p.add_argument("--count", type=_int64, default=1, help="how many identical jobs")

    p = sub.add_parser(
        "status", help="job counts and a table of jobs, or one job in full with its history"
    )
    p.add_argument("job", nargs="?", help="job id")
    p.add_argument("--state", choices=[s.value for s in store_base.JobState])
    p.add_argument("--limit", type=_int64, default=50)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")

    p = sub.add_parser("assistant", help="manage the assistant the worker's tools belong to")
    asub = p.add_subparsers(dest="assistant_command", required=True)
    s = asub.add_parser(
        "sync",
        help="create or update the assistant called NAME; its function tools become exactly "
        "the registry's (tools.modules)",
    )
    s.add_argument("--name", required=True, help="the assistant's name (the key to find it by)")
    s.add_argument("--model", required=True, help="e.g. gpt-4o-mini")
    s.add_argument("--instructions", default=None, help="system instructions")
    s.add_argument(
        "--script",
        default=None,
        metavar="JSON",
        help="emulator only: the scripted assistant's rounds (metadata emulator_script)",
    )

    sub.add_parser("migrate", help="create or upgrade the store's schema (PostgreSQL: required)")

    p = sub.add_parser("approve", help="decide a parked job's MCP tool approval and resume it")
    p.add_argument("job", help="a job in state waiting_approval")
    p.add_argument("calls", nargs="+", metavar="CALL", help="tool call id(s), from its status")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--allow", action="store_true", help="let the MCP call run")
    verdict.add_argument("--deny", action="store_true", help="refuse it")

    p = sub.add_parser("emulator", help="serve the local Assistants API emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8089)
    from orchestrator import emulator

    emulator.add_arguments(p)

    p = sub.add_parser("demo", help="the worker drives demo jobs against the emulator")
    p.add_argument("--jobs", type=int, default=len(DEMO_JOBS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        try:
            path = config.find(args.config)
            cfg = config.load(path)
            # The demo's story is its summary table; its log lines only when asked for.
            quiet = "WARNING" if args.command == "demo" else None
            logs.setup(cfg.logging, level=args.log_level or quiet)
            if path is None:
                log.info(
                    "config: built-in defaults (no --config, $%s or ./config.yaml)",
                    config.CONFIG_ENV,
                )
            else:
                log.info("config: loaded %s", path.resolve())
            return anyio.run(_COMMANDS[args.command], cfg, args)
        except BaseExceptionGroup as group:
            # A task group (the worker's health server, say) wraps the one error that ended it.
            raise _sole(group) from None
    except errors.ConfigError as exc:
        print(f"orchestrator: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except errors.OrchestratorError as exc:
        print(f"orchestrator: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_SIGINT


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The group's single innermost exception if it is our error, else the group itself."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    ours = [e for e in leaves if isinstance(e, errors.OrchestratorError | KeyboardInterrupt)]
    return ours[0] if len(ours) == 1 else group


# --- shared plumbing ---------------------------------------------------------------------------


@asynccontextmanager
async def _endpoint(cfg: config.Config) -> AsyncIterator[tuple[config.Config, bool]]:
    """The config to use, with the bundled emulator started when no endpoint is configured."""
    if not (cfg.uses_emulator and cfg.api_key() is None):
        # Entra ID needs no key; a key or a bearer token comes from the named variable.
        if cfg.api.resolved_credential != "entra" and cfg.api_key() is None:
            variable = cfg.api.api_key_env
            raise errors.ConfigError(
                f"api.base_url is {cfg.api.base_url!r} but ${variable} is not set: export "
                f"{variable}=<your key> (api.api_key_env names the variable)"
            )
        yield cfg, False
        return
    from orchestrator import emulator

    async with emulator.Emulator() as emu:
        print(
            f"orchestrator: no API key and no api.base_url configured: "
            f"using the bundled emulator at {emu.base_url}",
            file=sys.stderr,
            flush=True,
        )
        api = msgspec.structs.replace(cfg.api, base_url=emu.base_url)
        yield msgspec.structs.replace(cfg, api=api), True


def _key(cfg: config.Config, emulated: bool) -> config.Secret | None:
    return cfg.api_key() or (config.Secret("emulator") if emulated else None)


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
            return f"  {name} {state} in {d * 1000:.1f} ms -> {view.cell(output, 80)}"
        case events.OutputsSubmitted(outputs=outputs):
            return f"submitted {len(outputs)} outputs"
        case events.StreamFallback(reason=reason):
            return f"stream fallback: {reason}"
        case events.UnknownStatus(status=status):
            return f"unknown status {status!r}; waiting"
        case events.RunFinished(outcome=outcome) | events.ResponseFinished(outcome=outcome):
            return f"finished: {outcome}"
        case events.ResponseCreated(response=response, adopted=adopted):
            return f"response {response.id} {'adopted' if adopted else 'created'}"
        case events.ResponseStatusChanged(previous=previous, current=current):
            return f"status {previous or '-'} -> {current}"
        case events.ToolRoundRequested(calls=round_calls):
            return f"tool calls requested: {', '.join(c.name for c in round_calls)}"
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

    result: driver_mod.RunResult | responses_driver.ResponseResult | None = None
    stopped_by: list[int] = []
    async with (
        _endpoint(cfg) as (cfg, emulated),
        orch_mod.Orchestrator(cfg, credential=_credential(cfg, emulated), handler=show) as orch,
    ):
        if args.protocol == "responses":
            assistant = thread = ""
        else:
            assistant = args.assistant
            if assistant is None:
                if not emulated:
                    raise errors.ConfigError("--assistant: required unless the emulator is used")
                assistant = await _demo_assistant(orch.client, orch.registry)
            thread = args.thread or (await orch.client.create_thread()).id
        message = models.MessageRequest(role="user", content=args.message)
        async with anyio.create_task_group() as tg:
            # SIGTERM (and SIGINT) cancel the drive: the driver cancels the run on the server
            # (shielded, bounded) instead of leaving it in_progress.
            tg.start_soon(_cancel_on_signals, tg.cancel_scope, stopped_by)
            if args.protocol == "responses":
                model = args.model or DEMO_MODEL
                result = await orch.respond(model=model, input=args.message)
            else:
                result = await orch.run(
                    thread_id=thread, assistant_id=assistant, messages=[message]
                )
            tg.cancel_scope.cancel()
    if stopped_by:
        print(f"orchestrator: stopped by signal {stopped_by[0]}", file=sys.stderr)
        return EXIT_SIGTERM if stopped_by[0] == signal.SIGTERM else EXIT_SIGINT
    assert result is not None
    if not args.json:
        print(f"\nreply: {result.reply or '(none)'}")
    return 0 if result.ok else 1


async def _cancel_on_signals(scope: anyio.CancelScope, stopped_by: list[int]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            stopped_by.append(signum)
            scope.cancel()
            return


async def _run_worker(
    cfg: config.Config, emulated: bool, st: store_base.JobStore, *, until_idle: bool
) -> worker.Worker:
    # Thousands of runs in flight keep many objects alive between requests; with the default
    # thresholds the cyclic GC keeps walking them all and costs ~40% of the worker's CPU
    # (BENCHMARKS.md, B3). The process is ours here, so tune it here, not in the library.
    gc.set_threshold(50_000, 20, 10)
    m = metrics.Metrics()
    key = _key(cfg, emulated)
    async with (
        client_mod.AssistantsClient(
            cfg.api, cfg.retry, credential=_credential(cfg, emulated), observer=m
        ) as client,
        responses_client.ResponsesClient(cfg.api, cfg.retry, api_key=key, observer=m) as responses,
    ):
        w = worker.Worker(cfg, st, client, tools.default_registry, metrics_=m, responses=responses)
        if tracing.AVAILABLE:
            # Spans go to the global tracer provider: run the worker under
            # `opentelemetry-instrument` (or set one up in a tool module) to export them.
            w.subscribers.add(tracing.SpanRecorder().observe)
        failed: errors.StoreError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signals, w)
            try:
                await w.run(until_idle=until_idle)
            except errors.StoreError as exc:  # raised below, not as a task group's exception group
                failed = exc
            tg.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return w


async def cmd_worker(cfg: config.Config, args: argparse.Namespace) -> int:
    tools.import_tool_modules(cfg.tools.modules)
    async with _endpoint(cfg) as (live, emulated), store.open_store(live.worker) as st:
        w = await _run_worker(live, emulated, st, until_idle=args.until_idle)
    if w.stop_requested:
        # The signal receiver is gone: a late signal (the drain is over) must not turn a clean
        # exit into a death by signal (143).
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
    if w.aborted:
        # A second signal means now: sync tools still running in worker threads (which the
        # interpreter would wait for) are left behind; their jobs are resumed elsewhere.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


async def cmd_enqueue(cfg: config.Config, args: argparse.Namespace) -> int:
    spec: store_base.JobSpec
    if args.protocol == "responses":
        if args.adopt or args.assistant or args.thread:
            raise errors.InvalidJob("a Responses job takes --model or --agent and --message")
        spec = store_base.ResponseJob(
            model=args.model,
            agent=args.agent,
            input="\n".join(args.message),
            tools=tuple(args.mcp),
        )
    elif args.mcp:
        raise errors.InvalidJob("--mcp: for a Responses job (--protocol responses)")
    elif args.adopt:
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
    async with store.open_store(cfg.worker, readonly=True) as st:
        if args.job:
            history = await st.history(args.job)
            try:
                job = await st.get(args.job)
            except errors.StoreError as exc:
                if not history:
                    raise
                # A damaged (quarantined) row: its history still says what happened to it.
                print(f"job {args.job}: its row cannot be read ({exc})")
                rows = [(view.when(h.at), h.epoch, h.message) for h in history]
                print(view.table(("time", "epoch", "event"), rows, width=100))
                return 0
            if job is None:
                raise errors.StoreError(f"no job {args.job}")
            outputs = await st.outputs(job.run_id) if job.run_id else {}
            show = view.job_json if args.json else view.job_detail
            print(show(job, history, outputs))
            return 0
        state = store_base.JobState(args.state) if args.state else None
        counts = await st.counts()
        jobs = await st.list_jobs(state=state, limit=args.limit)
        if args.json:
            data = {
                "counts": {s.value: counts.get(s, 0) for s in store_base.JobState},
                "jobs": msgspec.to_builtins(jobs),
            }
            print(msgspec.json.encode(data).decode())
        else:
            print(view.counts_line(counts))
            print()
            print(view.job_table(jobs))
    return 0


async def cmd_approve(cfg: config.Config, args: argparse.Namespace) -> int:
    output = approvals.decision_output(bool(args.allow))
    async with store.open_store(cfg.worker) as st:
        await st.decide(args.job, dict.fromkeys(args.calls, output))
    verb = "allowed" if args.allow else "denied"
    print(f"{args.job}: {', '.join(args.calls)} {verb}; the job is queued again")
    return 0


async def cmd_assistant(cfg: config.Config, args: argparse.Namespace) -> int:
    tools.import_tool_modules(cfg.tools.modules)
    if not len(tools.default_registry):
        raise errors.ConfigError("tools.modules: no tools registered; nothing to sync")
    metadata = None
    if args.script is not None:
        metadata = {"emulator_script": args.script}
    async with (
        _endpoint(cfg) as (live, emulated),
        client_mod.AssistantsClient(
            live.api, live.retry, credential=_credential(live, emulated)
        ) as client,
    ):
        if emulated:
            print(
                "orchestrator: the bundled emulator forgets the assistant when this command "
                "exits; set api.base_url to a running `orchestrator emulator`",
                file=sys.stderr,
            )
        done = await assistants.sync_assistant(
            client,
            tools.default_registry,
            name=args.name,
            model=args.model,
            instructions=args.instructions,
            metadata=metadata,
        )
    names = ", ".join(t.name for t in tools.default_registry)
    print(f"orchestrator: {done.action} {done.assistant.id} with tools: {names}", file=sys.stderr)
    print(done.assistant.id)
    return 0


async def cmd_migrate(cfg: config.Config, args: argparse.Namespace) -> int:
    for line in await store.migrate(cfg.worker):
        print(line)
    return 0


async def cmd_emulator(cfg: config.Config, args: argparse.Namespace) -> int:
    from orchestrator import emulator

    try:
        await emulator.serve(emulator.settings_from_args(args), args.host, args.port)
    except OSError as exc:  # port in use, an unknown host, ...
        raise errors.ConfigError(
            f"emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
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
                spec: store_base.JobSpec
                if i % 2:  # every other job speaks the Responses API
                    script = {"emulator_script": json.dumps(answer)} if emulated else None
                    spec = store_base.ResponseJob(model=DEMO_MODEL, input=question, metadata=script)
                    ids.append(await st.enqueue(spec))
                    continue
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
        print(view.job_table(jobs))
    failed = [j for j in jobs if j.state != store_base.JobState.SUCCEEDED]
    return 1 if failed else 0


_COMMANDS = {
    "run": cmd_run,
    "worker": cmd_worker,
    "enqueue": cmd_enqueue,
    "status": cmd_status,
    "migrate": cmd_migrate,
    "approve": cmd_approve,
    "assistant": cmd_assistant,
    "emulator": cmd_emulator,
    "demo": cmd_demo,
}


if __name__ == "__main__":
    sys.exit(main())
