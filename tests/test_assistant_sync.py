"""`orchestrator assistant sync` and ``sync_assistant``: its tools are the registry's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from orchestrator import AssistantsClient, tools
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import models
from orchestrator.protocols.assistants.sync import sync_assistant

ROOT = Path(__file__).parent.parent
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")


@pytest.mark.anyio
async def test_sync_creates_then_updates_then_leaves_alone() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def first(x: int) -> int:
        """One."""
        return x

    async with (
        Emulator() as emu,
        AssistantsClient(base_url=emu.base_url, api_key="k") as client,
    ):
        made = await sync_assistant(client, registry, name="support", model="m1")
        assert made.action == "created"
        assert [t.function.name for t in made.assistant.tools if t.function] == ["first"]
        again = await sync_assistant(client, registry, name="support", model="m1")
        assert again.action == "unchanged"
        assert again.assistant.id == made.assistant.id

        @registry.tool
        def second(y: str) -> str:
            """Two."""
            return y

        # A tool the registry does not have goes; other tool types stay.
        await client.update_assistant(
            made.assistant.id,
            models.ModifyAssistant(
                tools=[*made.assistant.tools, models.ToolDefinition(type="code_interpreter")]
            ),
        )
        changed = await sync_assistant(
            client, registry, name="support", model="m2", instructions="Be brief."
        )
        assert changed.action == "updated"
        assert changed.assistant.id == made.assistant.id
        got = await client.retrieve_assistant(made.assistant.id)
        assert [t.type for t in got.tools] == ["code_interpreter", "function", "function"]
        assert [t.function.name for t in got.tools if t.function] == ["first", "second"]
        assert (got.model, got.instructions) == ("m2", "Be brief.")
        other = await sync_assistant(client, registry, name="other", model="m1")
        assert other.assistant.id != made.assistant.id


@pytest.fixture
def emulator_process() -> Iterator[str]:
    """``orchestrator emulator --port 0`` as its own process; yields its base URL."""
    proc = subprocess.Popen(
        [ORCHESTRATOR, "emulator", "--port", "0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")},
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "emulator listening on " in line:
                yield line.split("emulator listening on ")[1].split()[0]
                break
        else:
            pytest.fail("the emulator did not start")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def cli_env(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.update(OPENAI_API_KEY="sk-emulator", ORCHESTRATOR_API__BASE_URL=base_url)
    return env


@pytest.mark.timeout(60)
def test_worker_quick_start_sync_then_sigterm_cancels_the_run(emulator_process: str) -> None:
    """The README's flow: sync the assistant from the registry, then run against it; SIGTERM
    on `orchestrator run` cancels the run on the server and exits 143."""
    env = cli_env(emulator_process)
    sync = [ORCHESTRATOR, "assistant", "sync", "--name", "quick-start", "--model", "gpt-4o-mini"]
    stall = json.dumps([{"stall": True}])
    first, second = (
        subprocess.run(
            [*sync, "--script", stall],
            cwd=ROOT,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        for _ in range(2)
    )
    assert first.returncode == 0, first.stderr
    assistant = first.stdout.strip()
    assert assistant.startswith("asst_")
    assert "created" in first.stderr
    assert "calculate" in first.stderr  # the tools of ./config.yaml's tools.modules
    assert second.stdout.strip() == assistant
    assert "unchanged" in second.stderr

    run = subprocess.Popen(
        [ORCHESTRATOR, "run", "--assistant", assistant, "--message", "hi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert run.stdout is not None
    ids: list[str] = []
    for line in run.stdout:
        if line.startswith("run ") and " created on " in line:
            ids = [line.split()[1], line.split()[-1]]
        if "-> in_progress" in line:
            break
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 143
    assert run.stderr is not None
    assert "Traceback" not in run.stderr.read()
    run.stdout.close()
    run.stderr.close()
    run_id, thread_id = ids

    async def status() -> str:
        async with AssistantsClient(base_url=emulator_process, api_key="k") as client:
            return (await client.retrieve_run(thread_id, run_id)).status

    assert anyio.run(status) in ("cancelling", "cancelled")
