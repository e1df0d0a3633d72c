from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# --- issue 14: messages that name the fix -------------------------------------------------------


def test_unknown_key_from_the_environment_names_the_variable() -> None:
    with pytest.raises(errors.ConfigError, match=r"^ORCHESTRATOR_POLL__MOD: unknown key poll\.mod"):
        config.loads("", {"ORCHESTRATOR_POLL__MOD": "stream"})
    with pytest.raises(errors.ConfigError, match=r"^ORCHESTRATOR_POL__MODE: unknown section"):
        config.loads("", {"ORCHESTRATOR_POL__MODE": "stream"})


def test_bad_value_from_the_environment_names_the_variable() -> None:
    with pytest.raises(errors.ConfigError, match=r"set by ORCHESTRATOR_RETRY__ATTEMPTS"):
        config.loads("", {"ORCHESTRATOR_RETRY__ATTEMPTS": "many"})


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("poll: {mode: polling}", "poll, stream, auto"),
        ("tools: {on_error: ignore}", "output, raise"),
        ("logging: {level: verbose}", "DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_invalid_enum_lists_the_valid_values(text: str, valid: str) -> None:
    with pytest.raises(errors.ConfigError, match=rf"\(valid: {valid}\)"):
        config.loads(text, {})


def test_azure_base_url_ending_in_v1_is_caught() -> None:
    text = "api: {flavor: azure, api_version: 2024-08-01-preview, base_url: %s}"
    with pytest.raises(errors.ConfigError, match=r"api\.base_url: .* ends in /v1"):
        config.loads(text % "https://res.openai.azure.com/openai/v1/", {})
    assert config.loads(text % "https://res.openai.azure.com", {}).api.flavor == "azure"


def test_sections_given_as_mappings_are_validated_at_construction() -> None:
    cfg = config.Config(api={"base_url": "http://127.0.0.1:1/v1"}, poll={"mode": "stream"})  # type: ignore[arg-type]
    assert isinstance(cfg.api, config.ApiConfig)
    assert cfg.api.base_url == "http://127.0.0.1:1/v1"
    assert cfg.poll.mode == "stream"
    with pytest.raises(errors.ConfigError, match=r"api: .*unknown field `base_ur`"):
        config.Config(api={"base_ur": "x"})  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match=r"poll: expected a PollConfig"):
        config.Config(poll=3)  # type: ignore[arg-type]


def test_config_file_is_found_from_flag_variable_or_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.find(None, {}) is None
    (tmp_path / "config.yaml").write_text("poll: {mode: stream}\n")
    assert config.find(None, {}) == Path("config.yaml")
    assert config.find(None, {"ORCHESTRATOR_CONFIG": "/etc/o.yaml"}) == Path("/etc/o.yaml")
    assert config.find("given.yaml", {"ORCHESTRATOR_CONFIG": "/etc/o.yaml"}) == Path("given.yaml")
    # ORCHESTRATOR_CONFIG names the file; it is not a key override.
    assert config.loads("", {"ORCHESTRATOR_CONFIG": "x.yaml"}) == config.Config()


def test_api_key_with_cr_or_lf_is_a_config_error_naming_the_variable() -> None:
    cfg = config.Config()
    with pytest.raises(errors.ConfigError, match=r"^OPENAI_API_KEY: ") as info:
        cfg.api_key({"OPENAI_API_KEY": "sk-abc\r\nX-Injected: 1"})
    assert "sk-abc" not in str(info.value)


# --- issue 15 item 5: non-finite numbers ---------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "api.timeout",
        "api.max_requests_per_second",
        "retry.max_backoff",
        "poll.initial_interval",
        "poll.max_interval",
        "poll.multiplier",
        "poll.jitter",
        "run.run_timeout",
        "run.retry_failed_backoff",
        "tools.deadline_margin",
        "worker.lease_seconds",
        "worker.idle_poll_seconds",
        "worker.drain_timeout",
    ],
)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_rejected(key: str, value: str) -> None:
    section, name = key.split(".")
    with pytest.raises(errors.ConfigError, match=key.replace(".", r"\.")):
        config.loads(f"{section}: {{{name}: {value}}}", {})
    variable = f"ORCHESTRATOR_{section.upper()}__{name.upper()}"
    with pytest.raises(errors.ConfigError, match=variable):
        config.loads("", {variable: value})


# --- issue 15 item 6: one-line errors instead of tracebacks ---------------------------------------


def test_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("api: {organization: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(errors.ConfigError, match="not UTF-8") as info:
        config.load(path, {})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["[" * 5_000 + "]" * 5_000, "a:\n" + "- " * 5_000 + "x"])
def test_yaml_nested_thousands_deep_is_one_line(text: str) -> None:
    with pytest.raises(errors.ConfigError, match=r"nested too deeply|not valid YAML") as info:
        config.loads(text, {})
    assert "\n" not in str(info.value)
    with pytest.raises(errors.ConfigError, match="ORCHESTRATOR_POLL__MODE"):
        config.loads("", {"ORCHESTRATOR_POLL__MODE": "[" * 5_000})


@pytest.mark.parametrize(
    "text", ["poll: {mode: [}", "poll:\n  mode: poll\n mode: x\n", "x: 2001-13-45", "\t- a"]
)
def test_yaml_syntax_errors_are_one_line_with_the_place(text: str) -> None:
    with pytest.raises(errors.ConfigError, match="not valid YAML") as info:
        config.loads(text, {}, source="c.yaml")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("c.yaml: ")


@pytest.mark.parametrize("module", ["", ".", "a..b", "1abc", "my-tools"])
def test_tools_modules_entries_that_are_not_module_names(module: str) -> None:
    with pytest.raises(errors.ConfigError, match=r"tools\.modules: .* is not a module name"):
        config.loads(f"tools: {{modules: ['{module}']}}", {})


@pytest.mark.parametrize("health", ["127.0.0.1:70000", "127.0.0.1", "host:port", ":-1"])
def test_bad_worker_health_address(health: str) -> None:
    with pytest.raises(errors.ConfigError, match=r"worker\.health: expected host:port"):
        config.loads(f"worker: {{health: '{health}'}}", {})


# --- issue 15: config loading never fails with anything but ConfigError ---------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_KEYS = st.sampled_from(
    [
        *(f for f in config.Config.__struct_fields__),
        *(
            f
            for s in (config.ApiConfig, config.PollConfig, config.WorkerConfig)
            for f in s.__struct_fields__
        ),
        "bogus",
    ]
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


def _outcome(text: str, env: dict[str, str]) -> None:
    try:
        result = config.loads(text, env)
    except errors.ConfigError as exc:
        message = str(exc)
    else:
        assert isinstance(result, config.Config)
        return
    assert "\n" not in message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_property_arbitrary_config_documents(raw: dict[str, object]) -> None:
    _outcome(yaml.safe_dump(raw), {})


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_property_mutated_config_text(data: st.DataObject) -> None:
    text = (Path(__file__).parent.parent / "config.yaml").read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 8))
        insert = data.draw(
            st.text(alphabet=":{}[]-#&*!|>'\"%@`,?\t\n .0123456789abcnux\\", max_size=6)
        )
        text = text[:at] + insert + text[at + cut :]
    _outcome(text, {})


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.builds(
            lambda s, k: f"ORCHESTRATOR_{s}__{k}".upper() if k else f"ORCHESTRATOR_{s}".upper(),
            st.sampled_from([*config.Config.__struct_fields__, "x", "config"]),
            st.sampled_from(
                [
                    "",
                    *config.PollConfig.__struct_fields__,
                    *config.WorkerConfig.__struct_fields__,
                    "mod",
                ]
            ),
        ),
        st.text(max_size=20) | _VALUES.map(yaml.safe_dump),
        max_size=3,
    )
)
def test_property_environment_overrides(env: dict[str, str]) -> None:
    _outcome("", env)
