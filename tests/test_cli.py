"""The command line, run in-process: `run` and `demo` against the bundled emulator."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from orchestrator import cli, events


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def keep_root_logger() -> Iterator[None]:
    """The CLI configures the root logger for its process; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_run_starts_the_emulator_and_prints_transitions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--message", "What time is it in Tokyo?"]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert "bundled emulator" in captured.err  # banners go to stderr, results to stdout
    assert any(line.startswith("run run_") and "created" in line for line in out)
    assert any("-> requires_action" in line for line in out)
    assert any(line.startswith("submitted") for line in out)
    assert "finished: completed" in out
    assert any(line.startswith("reply: ") for line in out)


def test_run_json_stream_mode_prints_one_event_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["run", "--message", "hi", "--mode", "stream", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # stdout is JSON lines only (the emulator banner goes to stderr)
    decoded = [events.decode_event(line.encode()) for line in lines]
    assert isinstance(decoded[0], events.RunCreated)
    assert isinstance(decoded[-1], events.RunFinished)
    assert decoded[-1].outcome == "completed"
    assert json.loads(lines[-1])["type"] == "run.finished"


def test_run_without_assistant_against_a_real_endpoint_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used-secret")
    assert cli.main(["run", "--message", "hi"]) == 2
    err = capsys.readouterr().err
    assert "--assistant" in err
    assert "sk-not-used-secret" not in err


def test_demo_drives_jobs_and_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--jobs", "3"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "bundled emulator" in captured.err
    table = out[out.index("job ") :].splitlines()
    assert table[0].split()[:3] == ["job", "state", "tries"]
    rows = table[2:]
    assert len(rows) == 3
    assert all(" succeeded " in row and " completed " in row for row in rows)
