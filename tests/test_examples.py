"""The embedded-service example works, served for real on loopback."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import aiohttp
import msgspec
import pytest
from aiohttp import web

from orchestrator import Config

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parent.parent / "examples" / "embedded_service.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embedded_service", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["embedded_service"] = module
    spec.loader.exec_module(module)
    return module


async def test_embedded_service_answers_questions_by_driving_runs() -> None:
    example = load_example()
    # As `python examples/embedded_service.py` run from the repository root: ./config.yaml
    # names the example tools' module, which the Orchestrator imports.
    cfg = msgspec.convert({"tools": {"modules": ["handlers"]}}, Config)
    runner = web.AppRunner(example.make_app(cfg))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/ask"
            async with session.post(url, json={"question": "What time is it?"}) as resp:
                assert resp.status == 200
                answer = await resp.json()
            async with session.post(url, json={"nope": 1}) as resp:
                assert resp.status == 400
    finally:
        await runner.cleanup()
    assert answer["status"] == "completed"
    assert len(answer["tool_calls"]) == 1  # the scripted assistant called one example tool
    output = json.loads(answer["outputs"][0])
    assert "error" not in output  # a real result, not an error output
    assert output["timezone"] == "Asia/Tokyo"
    assert answer["reply"].startswith("In Tokyo it is {")
