"""Settings from `REFSERVER_*` variables: refserver.config, with explicit environments (never os.environ)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from refserver.config import ENV_PREFIX, Settings, documented_settings
from refserver.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "base_url": "http://localhost:3232",
    "redis_url": None,
    "redis_cluster": False,
    "auth_mode": "embedded",
    "auth_server_url": None,
    "resource_url": None,
    "auth_resources": (),
    "scopes_supported": ("mcp", "mcp:admin", "offline_access"),
    "required_scope": "mcp",
    "oauth_cimd_allow_loopback": "off",
    "oauth_exchange_audiences": (),
    "oauth_exchange_token_ttl": 300.0,
    "downstream_api_url": None,
    "access_token_ttl": 3600.0,
    "refresh_token_ttl": 2592000.0,
    "code_ttl": 300.0,
    "introspection_client_id": None,
    "introspection_client_secret": None,
    "introspection_cache_ttl": 30.0,
    "trusted_proxies": (),
    "rate_limit_per_minute": 60,
    "session_idle_ttl": 300.0,
    "subscription_update_interval": 10.0,
    "log_message_interval": 15.0,
    "features": ("reference", "conformance"),
    "max_body_bytes": 4 * 1024 * 1024,
    "body_read_timeout": 30.0,
    "max_sessions": 100_000,
    "allowed_hosts": (),
    "allowed_origins": (),
    "heartbeat_interval": 15.0,
    "sse_retry_ms": 1000,
    "write_stall_limit": 30.0,
    "event_log_max_events": 1000,
    "client_request_timeout": 120.0,
    "request_state_keys": (),
    "request_state_ttl": 600.0,
    "max_requests_in_flight": 10_000,
    "max_listeners": 10_000,
    "task_ttl": 3600.0,
    "task_lease": 30.0,
    "task_workers": 32,
    "tasks_per_subject": 100,
    "task_queue_limit": 10_000,
    "task_max_result_bytes": 1024 * 1024,
    "log_level": "INFO",
    "log_format": "json",
    "access_log": "off",
    "metrics": "off",
}


def load(**variables: str) -> Settings:
    """Settings from exactly these `REFSERVER_<NAME>` variables, no `.env`."""
    return Settings.from_env({ENV_PREFIX + name: value for name, value in variables.items()}, dotenv_path=None)


def config_error(**variables: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(**variables)
    return info.value


# --- defaults ---


def test_defaults_from_empty_environment() -> None:
    settings = Settings.from_env({}, dotenv_path=None)
    assert attrs.asdict(settings) == DEFAULTS
    assert settings == Settings()


def test_unrelated_variables_are_ignored() -> None:
    environ = {"PATH": "/usr/bin", "REFSERVER": "x", "REFSERVERX_FOO": "1", "refserver_foo": "1"}
    assert Settings.from_env(environ, dotenv_path=None) == Settings()


def test_derived_urls_of_defaults() -> None:
    settings = Settings()
    assert settings.base_origin == "http://localhost:3232"
    assert settings.mcp_url == "http://localhost:3232/mcp"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        settings.max_sessions = 1  # type: ignore[misc]


# --- each setting parsed ---


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("BASE_URL", "https://mcp.example.com", "base_url", "https://mcp.example.com"),
        ("BASE_URL", "https://mcp.example.com/", "base_url", "https://mcp.example.com"),
        ("BASE_URL", "http://127.0.0.1:8080/prefix//", "base_url", "http://127.0.0.1:8080/prefix"),
        ("REDIS_URL", "redis://localhost:6379/0", "redis_url", "redis://localhost:6379/0"),
        ("REDIS_URL", "", "redis_url", None),
        ("REDIS_CLUSTER", "true", "redis_cluster", True),
        ("REDIS_CLUSTER", "False", "redis_cluster", False),
        ("AUTH_MODE", "none", "auth_mode", "none"),
        ("SESSION_IDLE_TTL", "60", "session_idle_ttl", 60.0),
        ("SESSION_IDLE_TTL", "0.25", "session_idle_ttl", 0.25),
        ("SUBSCRIPTION_UPDATE_INTERVAL", "0.5", "subscription_update_interval", 0.5),
        ("LOG_MESSAGE_INTERVAL", "1e1", "log_message_interval", 10.0),
        ("FEATURES", "reference", "features", ("reference",)),
        ("FEATURES", " conformance , reference ,", "features", ("conformance", "reference")),
        ("MAX_BODY_BYTES", "1024", "max_body_bytes", 1024),
        ("BODY_READ_TIMEOUT", "0.5", "body_read_timeout", 0.5),
        ("WRITE_STALL_LIMIT", "2", "write_stall_limit", 2.0),
        ("MAX_SESSIONS", "3", "max_sessions", 3),
        (
            "ALLOWED_HOSTS",
            "mcp.example.com, proxy.local:8443",
            "allowed_hosts",
            ("mcp.example.com", "proxy.local:8443"),
        ),
        ("ALLOWED_HOSTS", "", "allowed_hosts", ()),
        ("ALLOWED_ORIGINS", "https://app.example.com,,", "allowed_origins", ("https://app.example.com",)),
        ("HEARTBEAT_INTERVAL", "2.5", "heartbeat_interval", 2.5),
        ("SSE_RETRY_MS", "250", "sse_retry_ms", 250),
        ("EVENT_LOG_MAX_EVENTS", "10", "event_log_max_events", 10),
        ("CLIENT_REQUEST_TIMEOUT", "30", "client_request_timeout", 30.0),
        ("REQUEST_STATE_KEYS", "new-secret,old-secret", "request_state_keys", ("new-secret", "old-secret")),
        ("REQUEST_STATE_TTL", "120", "request_state_ttl", 120.0),
        ("MAX_LISTENERS", "5", "max_listeners", 5),
        ("MAX_REQUESTS_IN_FLIGHT", "7", "max_requests_in_flight", 7),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("LOG_LEVEL", "Warning", "log_level", "WARNING"),
    ],
)
def test_each_setting_is_parsed(variable: str, raw: str, field: str, expected: object) -> None:
    settings = load(**{variable: raw})
    assert getattr(settings, field) == expected
    assert type(getattr(settings, field)) is type(expected)
    others = {name: value for name, value in DEFAULTS.items() if name != field}
    assert {name: getattr(settings, name) for name in others} == others


def test_values_are_stripped() -> None:
    settings = load(SESSION_IDLE_TTL="  42 \n", BASE_URL=" https://x.example/ ", LOG_LEVEL=" error ")
    assert settings.session_idle_ttl == 42.0
    assert settings.base_url == "https://x.example"
    assert settings.log_level == "ERROR"


def test_many_settings_together() -> None:
    settings = load(
        BASE_URL="https://mcp.example.com:8443/v1",
        REDIS_URL="redis://cache:6379",
        MAX_SESSIONS="10",
        FEATURES="conformance",
        ALLOWED_ORIGINS="https://a.example,https://b.example",
    )
    assert settings.base_origin == "https://mcp.example.com:8443"
    assert settings.mcp_url == "https://mcp.example.com:8443/v1/mcp"
    assert settings.redis_url == "redis://cache:6379"
    assert settings.max_sessions == 10
    assert settings.features == ("conformance",)
    assert settings.allowed_origins == ("https://a.example", "https://b.example")


# --- unknown and invalid settings ---


def test_unknown_setting_is_rejected_by_name() -> None:
    error = config_error(FOO="1")
    assert error.message.startswith(
        "unknown setting(s) REFSERVER_FOO; known settings: REFSERVER_ACCESS_LOG, REFSERVER_ACCESS_TOKEN_TTL"
    )
    assert "REFSERVER_SESSION_IDLE_TTL" in error.message


def test_typo_of_a_known_setting_is_rejected() -> None:
    error = config_error(SESSION_IDLE_TTL="5", SESION_IDLE_TTL="60", BASEURL="http://x")
    assert error.message.startswith("unknown setting(s) REFSERVER_BASEURL, REFSERVER_SESION_IDLE_TTL;")


def test_bare_prefix_is_an_unknown_setting() -> None:
    assert config_error(**{"": "x"}).message.startswith("unknown setting(s) REFSERVER_;")


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SESSION_IDLE_TTL", "-1"),
        ("SESSION_IDLE_TTL", "0"),
        ("SESSION_IDLE_TTL", "nan"),
        ("SESSION_IDLE_TTL", "five"),
        ("SESSION_IDLE_TTL", ""),
        ("SUBSCRIPTION_UPDATE_INTERVAL", "-0.5"),
        ("LOG_MESSAGE_INTERVAL", "0.0"),
        ("HEARTBEAT_INTERVAL", "-15"),
        ("CLIENT_REQUEST_TIMEOUT", "soon"),
        ("BODY_READ_TIMEOUT", "0"),
        ("WRITE_STALL_LIMIT", "-30"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_BODY_BYTES", "1.5"),
        ("MAX_BODY_BYTES", "4MB"),
        ("MAX_SESSIONS", "-1"),
        ("SSE_RETRY_MS", "0"),
        ("EVENT_LOG_MAX_EVENTS", "ten"),
        ("BASE_URL", "localhost:3232"),
        ("BASE_URL", "mcp.example.com"),
        ("BASE_URL", "/mcp"),
        ("BASE_URL", "ftp://mcp.example.com"),
        ("BASE_URL", "http://"),
        ("BASE_URL", ""),
        ("BASE_URL", "https://mcp.example.com/?x=1"),
        ("BASE_URL", "https://mcp.example.com/#frag"),
        ("BASE_URL", "https://user:secret@mcp.example.com"),
        ("BASE_URL", "http://localhost:port"),
        ("BASE_URL", "http://localhost:99999"),
        ("FEATURES", "bogus"),
        ("FEATURES", "reference,bogus"),
        ("AUTH_MODE", "oauth"),
        ("AUTH_MODE", ""),
        ("LOG_LEVEL", "loud"),
        ("LOG_LEVEL", ""),
    ],
)
def test_invalid_value_names_the_variable(variable: str, raw: str) -> None:
    error = config_error(**{variable: raw})
    assert error.message.startswith(f"REFSERVER_{variable}={raw!r}: ")


def test_invalid_value_messages_explain() -> None:
    assert config_error(SESSION_IDLE_TTL="-1").message == "REFSERVER_SESSION_IDLE_TTL='-1': must be > 0"
    assert config_error(MAX_SESSIONS="0").message == "REFSERVER_MAX_SESSIONS='0': must be > 0"
    assert config_error(BASE_URL="localhost").message == (
        "REFSERVER_BASE_URL='localhost': must be an absolute http(s) URL"
    )
    assert config_error(AUTH_MODE="oauth2").message == (
        "REFSERVER_AUTH_MODE='oauth2': must be one of embedded, jwt, introspection, none"
    )
    assert config_error(FEATURES="reference,extra").message == (
        "REFSERVER_FEATURES='reference,extra': unknown feature module(s) ['extra']; built in: reference, "
        "conformance, or a dotted module path such as mycompany.mcp_features"
    )


def test_config_error_is_chained_to_the_parse_error() -> None:
    error = config_error(MAX_BODY_BYTES="x")
    assert isinstance(error.__cause__, ValueError)


# --- .env file ---


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# local overrides\n"
        "REFSERVER_SESSION_IDLE_TTL=60\n"
        'REFSERVER_BASE_URL="https://dev.example.com/"\n'
        "REFSERVER_FEATURES=reference\n"
        "UNRELATED=1\n"
    )
    settings = Settings.from_env({}, dotenv_path=dotenv)
    assert settings.session_idle_ttl == 60.0
    assert settings.base_url == "https://dev.example.com"
    assert settings.features == ("reference",)
    assert settings.max_sessions == 100_000


def test_environment_overrides_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / "settings.env"
    dotenv.write_text("REFSERVER_MAX_SESSIONS=5\nREFSERVER_REDIS_URL=redis://from-file\nREFSERVER_SSE_RETRY_MS=9\n")
    environ = {"REFSERVER_MAX_SESSIONS": "7", "REFSERVER_REDIS_URL": ""}
    settings = Settings.from_env(environ, dotenv_path=str(dotenv))
    assert settings.max_sessions == 7
    assert settings.redis_url is None
    assert settings.sse_retry_ms == 9


def test_unknown_setting_in_dotenv_is_rejected(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("REFSERVER_TYPO=1\n")
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) REFSERVER_TYPO;"):
        Settings.from_env({}, dotenv_path=dotenv)


def test_invalid_value_in_dotenv_names_the_variable(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("REFSERVER_HEARTBEAT_INTERVAL=-3\n")
    with pytest.raises(ConfigError, match=r"^REFSERVER_HEARTBEAT_INTERVAL='-3': must be > 0$"):
        Settings.from_env({}, dotenv_path=dotenv)


def test_environment_can_fix_an_invalid_dotenv_value(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("REFSERVER_HEARTBEAT_INTERVAL=-3\n")
    settings = Settings.from_env({"REFSERVER_HEARTBEAT_INTERVAL": "3"}, dotenv_path=dotenv)
    assert settings.heartbeat_interval == 3.0


def test_missing_dotenv_file_is_ignored(tmp_path: Path) -> None:
    assert Settings.from_env({}, dotenv_path=tmp_path / "absent.env") == Settings()


def test_dotenv_directory_is_ignored(tmp_path: Path) -> None:
    assert Settings.from_env({}, dotenv_path=tmp_path) == Settings()


def test_reads_process_environment_when_environ_is_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("REFSERVER_MAX_SESSIONS", "12")
    (tmp_path / ".env").write_text("REFSERVER_MAX_SESSIONS=99\nREFSERVER_SSE_RETRY_MS=77\n")
    settings = Settings.from_env()
    assert settings.max_sessions == 12
    assert settings.sse_retry_ms == 77


# --- documentation ---


def test_documented_settings_cover_every_field_in_order() -> None:
    rows = documented_settings()
    fields = attrs.fields(Settings)
    assert [row[0] for row in rows] == [ENV_PREFIX + field.name.upper() for field in fields]
    assert [row[0] for row in rows] == [ENV_PREFIX + field.metadata["env"] for field in fields]
    assert len(rows) == len(DEFAULTS)
    for variable, default, doc in rows:
        assert variable.startswith("REFSERVER_")
        assert isinstance(default, str)
        assert doc.strip()
        assert doc.endswith(".")


def test_documented_defaults_are_shown_as_text() -> None:
    shown = {variable: default for variable, default, _ in documented_settings()}
    assert shown == {
        "REFSERVER_BASE_URL": "http://localhost:3232",
        "REFSERVER_REDIS_URL": "(unset)",
        "REFSERVER_REDIS_CLUSTER": "false",
        "REFSERVER_AUTH_MODE": "embedded",
        "REFSERVER_AUTH_SERVER_URL": "(unset)",
        "REFSERVER_RESOURCE_URL": "(unset)",
        "REFSERVER_AUTH_RESOURCES": "(empty)",
        "REFSERVER_SCOPES_SUPPORTED": "mcp,mcp:admin,offline_access",
        "REFSERVER_REQUIRED_SCOPE": "mcp",
        "REFSERVER_OAUTH_CIMD_ALLOW_LOOPBACK": "off",
        "REFSERVER_OAUTH_EXCHANGE_AUDIENCES": "(empty)",
        "REFSERVER_OAUTH_EXCHANGE_TOKEN_TTL": "300.0",
        "REFSERVER_DOWNSTREAM_API_URL": "(unset)",
        "REFSERVER_ACCESS_TOKEN_TTL": "3600.0",
        "REFSERVER_REFRESH_TOKEN_TTL": "2592000.0",
        "REFSERVER_CODE_TTL": "300.0",
        "REFSERVER_INTROSPECTION_CLIENT_ID": "(unset)",
        "REFSERVER_INTROSPECTION_CLIENT_SECRET": "(unset)",
        "REFSERVER_INTROSPECTION_CACHE_TTL": "30.0",
        "REFSERVER_TRUSTED_PROXIES": "(empty)",
        "REFSERVER_RATE_LIMIT_PER_MINUTE": "60",
        "REFSERVER_SESSION_IDLE_TTL": "300.0",
        "REFSERVER_SUBSCRIPTION_UPDATE_INTERVAL": "10.0",
        "REFSERVER_LOG_MESSAGE_INTERVAL": "15.0",
        "REFSERVER_FEATURES": "reference,conformance",
        "REFSERVER_MAX_BODY_BYTES": "4194304",
        "REFSERVER_BODY_READ_TIMEOUT": "30.0",
        "REFSERVER_MAX_SESSIONS": "100000",
        "REFSERVER_ALLOWED_HOSTS": "(empty)",
        "REFSERVER_ALLOWED_ORIGINS": "(empty)",
        "REFSERVER_HEARTBEAT_INTERVAL": "15.0",
        "REFSERVER_SSE_RETRY_MS": "1000",
        "REFSERVER_WRITE_STALL_LIMIT": "30.0",
        "REFSERVER_EVENT_LOG_MAX_EVENTS": "1000",
        "REFSERVER_CLIENT_REQUEST_TIMEOUT": "120.0",
        "REFSERVER_REQUEST_STATE_KEYS": "(empty)",
        "REFSERVER_REQUEST_STATE_TTL": "600.0",
        "REFSERVER_MAX_REQUESTS_IN_FLIGHT": "10000",
        "REFSERVER_MAX_LISTENERS": "10000",
        "REFSERVER_TASK_TTL": "3600.0",
        "REFSERVER_TASK_LEASE": "30.0",
        "REFSERVER_TASK_WORKERS": "32",
        "REFSERVER_TASKS_PER_SUBJECT": "100",
        "REFSERVER_TASK_QUEUE_LIMIT": "10000",
        "REFSERVER_TASK_MAX_RESULT_BYTES": "1048576",
        "REFSERVER_LOG_LEVEL": "INFO",
        "REFSERVER_LOG_FORMAT": "json",
        "REFSERVER_ACCESS_LOG": "off",
        "REFSERVER_METRICS": "off",
    }


def test_documented_defaults_parse_back_to_the_defaults() -> None:
    placeholders = ("(unset)", "(empty)")
    environ = {variable: default for variable, default, _ in documented_settings() if default not in placeholders}
    assert Settings.from_env(environ, dotenv_path=None) == Settings()


def test_operations_doc_lists_every_setting() -> None:
    from pathlib import Path

    from refserver.config import settings_table_markdown

    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    assert settings_table_markdown() in doc, "regenerate the table with `python -m refserver.config`"
