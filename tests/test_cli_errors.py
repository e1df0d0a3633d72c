"""The command line fails with one line and exit 2 on bad settings, never a traceback."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path

import pytest

from orchestrator import AssistantsClient, cli, errors, tools
from orchestrator.emulator import Emulator
from orchestrator.emulator.settings import EmulatorSettings, FaultSettings
from orchestrator.protocols.assistants import models


@pytest.fixture(autouse=True)
def in_tmp(cli_in_tmp: Path) -> None:
    """Every test runs the CLI in an empty directory with a clean environment."""


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], *expected: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert last.startswith("orchestrator: config error: ")
    assert "Traceback" not in err
    for text in expected:
        assert text in last
    return last


def busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


# --- which config file -------------------------------------------------------------------------


def test_config_yaml_in_the_working_directory_is_loaded_and_named_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.sqlite3"
    write(tmp_path / "config.yaml", f"worker: {{sqlite_path: {json.dumps(str(db))}}}\n")
    assert cli.main(["enqueue", "--assistant", "asst_1", "--message", "hi"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "config: loaded " + str(tmp_path / "config.yaml") in err[0]
    assert db.exists()  # the file's sqlite_path was used


def test_orchestrator_config_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "config.yaml", "poll: {mode: stream}\n")
    other = write(tmp_path / "other.yaml", "poll: {mode: nonsense}\n")
    monkeypatch.setenv("ORCHESTRATOR_CONFIG", other)
    one_line_exit_2(capsys, ["status"], "other.yaml", "(valid: poll, stream, auto)")


def test_without_any_file_the_first_line_says_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["status", "--json"]) == 0
    captured = capsys.readouterr()
    assert "config: built-in defaults" in captured.err.splitlines()[0]
    assert json.loads(captured.out)["counts"]["queued"] == 0


# --- tools.modules -----------------------------------------------------------------------------


def test_a_module_in_the_working_directory_is_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.delitem(sys.modules, "cwd_tools_mod_x", raising=False)
    registry = tools.ToolRegistry()
    monkeypatch.setattr(tools, "default_registry", registry)
    write(
        tmp_path / "cwd_tools_mod_x.py",
        "from orchestrator import tools\n\n\n"
        "@tools.default_registry.tool\n"
        "def cwd_tool() -> str:\n    return 'hi'\n",
    )
    tools.import_tool_modules(["cwd_tools_mod_x"])
    assert "cwd_tool" in registry
    sys.modules.pop("cwd_tools_mod_x", None)


def test_a_module_raising_at_import_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "boom_tools_mod_x", raising=False)
    write(tmp_path / "boom_tools_mod_x.py", "raise RuntimeError('no database here')\n")
    write(tmp_path / "config.yaml", "tools: {modules: [boom_tools_mod_x]}\n")
    one_line_exit_2(
        capsys, ["run", "--message", "hi"], "boom_tools_mod_x", "RuntimeError: no database here"
    )
    sys.modules.pop("boom_tools_mod_x", None)


@pytest.mark.parametrize("module", ["", "."])
def test_empty_or_dot_module_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], module: str
) -> None:
    write(tmp_path / "config.yaml", f"tools: {{modules: ['{module}']}}\n")
    one_line_exit_2(capsys, ["run", "--message", "hi"], "is not a module name")


# --- files and values --------------------------------------------------------------------------


def test_non_utf8_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yaml").write_bytes(b"api: {organization: caf\xe9}\n")
    one_line_exit_2(capsys, ["status"], "not UTF-8")


@pytest.mark.parametrize("text", ["[" * 5_000, "poll: {mode: [}\n", "poll:\n  a: 1\n b: 2\n"])
def test_deep_or_broken_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    write(tmp_path / "config.yaml", text)
    one_line_exit_2(capsys, ["status"], "not valid YAML")


def test_deep_yaml_in_an_environment_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_RUN__RETRY_FAILED_CODES", "[" * 5_000)
    one_line_exit_2(capsys, ["status"], "ORCHESTRATOR_RUN__RETRY_FAILED_CODES")


def test_nan_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_POLL__INITIAL_INTERVAL", "nan")
    # YAML reads "nan" as text; ".nan" is its NaN: both are refused.
    one_line_exit_2(capsys, ["status"], "poll.initial_interval")
    monkeypatch.setenv("ORCHESTRATOR_POLL__INITIAL_INTERVAL", ".nan")
    one_line_exit_2(capsys, ["status"], "must be a finite number")


@pytest.mark.parametrize("key", ["sk-abc\r\nX-Evil: 1", "sk-abc\n"])
def test_api_key_with_cr_lf(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", key)
    last = one_line_exit_2(capsys, ["run", "--message", "hi", "--assistant", "a"], "OPENAI_API_KEY")
    assert "sk-abc" not in last


def test_base_url_without_a_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_API__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("ORCHESTRATOR_API__API_KEY_ENV", "MY_SERVICE_KEY")
    one_line_exit_2(
        capsys, ["run", "--message", "hi", "--assistant", "a"], "export MY_SERVICE_KEY="
    )


# --- listeners ---------------------------------------------------------------------------------


def test_busy_worker_health_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock, port = busy_port()
    with sock:
        write(
            tmp_path / "config.yaml",
            f"worker: {{sqlite_path: {json.dumps(str(tmp_path / 'j.db'))}, "
            f"health: '127.0.0.1:{port}'}}\n",
        )
        one_line_exit_2(capsys, ["worker", "--until-idle"], "worker.health", str(port))


def test_bad_worker_health_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        tmp_path / "config.yaml",
        f"worker: {{sqlite_path: {json.dumps(str(tmp_path / 'j.db'))}, "
        "health: 'no-such-host.invalid:0'}\n",
    )
    one_line_exit_2(capsys, ["worker", "--until-idle"], "worker.health")


def test_emulator_on_a_busy_port_or_bad_host(capsys: pytest.CaptureFixture[str]) -> None:
    sock, port = busy_port()
    with sock:
        one_line_exit_2(capsys, ["emulator", "--port", str(port)], f"127.0.0.1:{port}")
    one_line_exit_2(capsys, ["emulator", "--host", "no-such-host.invalid", "--port", "0"])


@pytest.mark.parametrize(
    "argv",
    [
        ["emulator", "--port", "70000"],
        ["emulator", "--port", "x"],
        ["emulator", "--think-delay", "nan"],
        ["emulator", "--fault-429", "inf"],
        ["status", "--limit", str(2**64)],
        ["enqueue", "--assistant", "a", "--count", str(2**64)],
    ],
)
def test_out_of_range_flags_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("orchestrator ")  # argparse's "prog cmd: error: ..."


# --- emulator settings refuse non-finite numbers --------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_emulator_settings_refuse_non_finite_numbers(value: float) -> None:
    with pytest.raises(errors.ConfigError, match="think_delay: must be a finite number"):
        EmulatorSettings(think_delay=value)
    with pytest.raises(errors.ConfigError, match="fault_500: must be a finite number"):
        FaultSettings(fault_500=value)


@pytest.mark.anyio
async def test_emulator_run_faults_with_an_infinite_number_are_a_400() -> None:
    async with (
        Emulator() as emu,
        AssistantsClient(base_url=emu.base_url, api_key="k") as client,
    ):
        assistant = await client.create_assistant(model="m")
        thread = await client.create_thread()
        body = models.CreateRun(
            assistant_id=assistant.id, metadata={"emulator_faults": '{"slow_delay": 1e999}'}
        )
        with pytest.raises(errors.BadRequestError, match="slow_delay"):
            await client.create_run(thread.id, body)
