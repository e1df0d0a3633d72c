from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from orchestrator import config, errors


def test_bundled_config_yaml_equals_defaults_but_enables_the_demo_tools() -> None:
    path = Path(__file__).parent.parent / "config.yaml"
    loaded = config.load(path, env={})
    assert loaded.tools.modules == ("handlers",)
    assert config.Config().tools.modules == ()  # the library enables no demo tools
    tools = msgspec.structs.replace(loaded.tools, modules=())
    assert msgspec.structs.replace(loaded, tools=tools) == config.Config()


def test_unknown_key_is_named() -> None:
    with pytest.raises(errors.ConfigError, match=r"unknown field `max_intervl` - at `\$.poll`"):
        config.loads("poll: {max_intervl: 3}", {})


def test_type_error_names_path() -> None:
    with pytest.raises(errors.ConfigError, match=r"\$\.poll\.max_interval"):
        config.loads("poll: {max_interval: abc}", {})


def test_unknown_section_is_named() -> None:
    with pytest.raises(errors.ConfigError, match="pol"):
        config.loads("pol: {}", {})


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("api: {flavor: azure}", "api.api_version"),
        ("worker: {lease_seconds: 1}", "worker.heartbeat_seconds"),
        ("poll: {initial_interval: 0}", "poll.initial_interval"),
        ("worker: {store: postgres}", "worker.postgres_dsn"),
    ],
)
def test_invalid_values_name_key(text: str, key: str) -> None:
    with pytest.raises(errors.ConfigError, match=key.replace(".", r"\.")):
        config.loads(text, {})


def test_environment_overrides_single_keys() -> None:
    cfg = config.loads(
        "poll: {mode: poll}",
        {"ORCHESTRATOR_POLL__MODE": "stream", "ORCHESTRATOR_RETRY__ATTEMPTS": "2"},
    )
    assert cfg.poll.mode == "stream"
    assert cfg.retry.attempts == 2


def test_bad_environment_override_is_named() -> None:
    with pytest.raises(errors.ConfigError, match="ORCHESTRATOR_POLL"):
        config.loads("", {"ORCHESTRATOR_POLL": "x"})
    with pytest.raises(errors.ConfigError, match="bogus"):
        config.loads("", {"ORCHESTRATOR_POLL__BOGUS": "1"})


def test_api_key_comes_from_named_variable_and_never_shows() -> None:
    cfg = config.loads("api: {api_key_env: MY_KEY}", {})
    assert cfg.api_key({"OPENAI_API_KEY": "sk-other"}) is None
    key = cfg.api_key({"MY_KEY": "sk-secret-123"})
    assert key is not None
    assert key.get() == "sk-secret-123"
    assert "sk-secret" not in repr(key)
    assert "sk-secret" not in str(key)
    assert "sk-secret" not in f"{key}"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"nope\.yaml"):
        config.load(tmp_path / "nope.yaml", {})


def test_cli_prints_config_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator import cli

    bad = tmp_path / "c.yaml"
    bad.write_text("tools: {timeout: -1}\n")
    assert cli.main(["--config", str(bad), "demo"]) == 2
    err = capsys.readouterr().err
    assert "tools.timeout" in err
    assert err.count("\n") == 1
