"""A small aiohttp web service that embeds the orchestrator.

``POST /ask {"question": "..."}`` creates a thread with the question, drives a run with the
service's tools and answers ``{"reply": ..., "status": ..., "tool_calls": [...]}``. One
``Orchestrator`` (one HTTP session, one request limiter) serves every request.

Run it from the repository root against the bundled emulator (no API key needed)::

    python examples/embedded_service.py --port 8080
    curl -s localhost:8080/ask -d '{"question": "What time is it in Tokyo?"}'

The tools come from ``tools.modules`` in ./config.yaml (the example ``handlers``), which the
Orchestrator imports. The emulator has no model: its demo assistant is *scripted* (metadata
``emulator_script``) to call ``current_time`` for Tokyo and quote the output, so the answer is
a real tool result rather than calls with made-up arguments. With ``OPENAI_API_KEY`` set (and
``api.base_url`` in config.yaml for a compatible endpoint), pass ``--assistant asst_...`` to use
a real assistant instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from orchestrator import Config, Emulator, Orchestrator, config, tools
from orchestrator.protocols.assistants import models

ORCH = web.AppKey("orchestrator", Orchestrator)
ASSISTANT = web.AppKey("assistant", str)
#: What the emulator's scripted assistant does for every question: one tool round, one answer.
EMULATOR_SCRIPT = [
    {"tool_calls": [{"name": "current_time", "arguments": {"timezone": "Asia/Tokyo"}}]},
    {"message": "In Tokyo it is {output:current_time}"},
]


class Ask(msgspec.Struct, forbid_unknown_fields=True):
    """The request body."""

    question: str


class Answer(msgspec.Struct):
    """The response body."""

    reply: str | None
    status: str
    tool_calls: list[str]
    #: The outputs submitted for those calls.
    outputs: list[str]


async def ask(request: web.Request) -> web.Response:
    """Drive one run for the question and answer with its reply."""
    try:
        body = msgspec.json.decode(await request.read(), type=Ask)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(text=f"invalid request: {exc}") from exc
    orch = request.app[ORCH]
    message = models.MessageRequest(role="user", content=body.question)
    result = await orch.create_thread_and_run(
        assistant_id=request.app[ASSISTANT], messages=[message]
    )
    calls = [o.tool_call_id for o in result.outputs]
    outputs = [o.output for o in result.outputs]
    answer = Answer(reply=result.reply, status=result.outcome, tool_calls=calls, outputs=outputs)
    return web.Response(body=msgspec.json.encode(answer), content_type="application/json")


def make_app(cfg: Config, *, assistant_id: str | None = None) -> web.Application:
    """The service; with no assistant id it uses the emulator and creates a demo assistant."""
    app = web.Application()
    app.router.add_post("/ask", ask)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            live, key = cfg, cfg.api_key()
            if assistant_id is None:
                emu = await stack.enter_async_context(Emulator())
                api = msgspec.structs.replace(cfg.api, base_url=emu.base_url)
                live, key = msgspec.structs.replace(cfg, api=api), config.Secret("emulator")
            orch = await stack.enter_async_context(Orchestrator(live, api_key=key))
            app[ORCH] = orch
            if assistant_id is None:
                created = await orch.client.create_assistant(
                    model="gpt-4o-mini",
                    tools=tools.default_registry.definitions(),
                    metadata={"emulator_script": json.dumps(EMULATOR_SCRIPT)},
                )
                app[ASSISTANT] = created.id
            else:
                app[ASSISTANT] = assistant_id
            yield

    app.cleanup_ctx.append(lifespan)
    return app


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--config", default=None)
    parser.add_argument("--assistant", default=None, help="a real assistant id (else: emulator)")
    args = parser.parse_args()
    web.run_app(
        make_app(config.load(config.find(args.config)), assistant_id=args.assistant),
        host="127.0.0.1",
        port=args.port,
    )


if __name__ == "__main__":
    main()
