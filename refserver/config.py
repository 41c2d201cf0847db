"""Frozen settings read from `REFSERVER_*` environment variables (and an optional `.env` file).

Every setting is declared once below with its variable name, parser and one-line documentation; the
table in `docs/operations.md` is checked against this list by the tests. Unknown `REFSERVER_*` names are
rejected at start-up so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from refserver import setting_values as values
from refserver.errors import ConfigError
from refserver.setting_values import FEATURE_MODULES

MAX_EVENTS_PER_STREAM: Final = 1000
"""Default bound of one stream's log (REFSERVER_EVENT_LOG_MAX_EVENTS): far more than a request's progress and
logs, and about 1 MB at most per stream with events of 1 KB; older events are dropped."""

BODY_READ_TIMEOUT: Final = 30.0
"""Default seconds a client gets to send a whole request body (REFSERVER_BODY_READ_TIMEOUT): a body of the default
REFSERVER_MAX_BODY_BYTES needs only ~140 kB/s; a client that sends its head and stalls (slow loris) gets 408 instead
of holding a task and a partial body."""
WRITE_STALL_LIMIT: Final = 30.0
"""Default seconds one response write may wait for a client that does not read (REFSERVER_WRITE_STALL_LIMIT): two
heartbeat intervals in which it took in nothing means it stopped reading, and a whole body of the default
REFSERVER_MAX_BODY_BYTES still reaches a client at ~140 kB/s; a stalled client would otherwise pin a task, its socket
buffers and, on an SSE stream, its session."""

ENV_PREFIX: Final = "REFSERVER_"

DEFAULT_EXTERNAL_AUTH_SERVER: Final = "http://localhost:3001"


def _setting(env: str, parse: Callable[[str], Any], doc: str, default: Any) -> Any:
    return attrs.field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@attrs.frozen(kw_only=True)
class Settings:
    base_url: str = _setting(
        "BASE_URL",
        values.base_url,
        "Public URL of this server (issuer, resource URI, links).",
        "http://localhost:3232",
    )
    redis_url: str | None = _setting(
        "REDIS_URL", values.optional_str, "Redis URL; unset means the in-memory backend (one instance).", None
    )
    redis_cluster: bool = _setting(
        "REDIS_CLUSTER",
        values.boolean,
        "`true`: REFSERVER_REDIS_URL names any node of a Redis Cluster (7 or newer), used through the cluster "
        "client (docs/scaling.md).",
        False,
    )
    auth_mode: str = _setting(
        "AUTH_MODE",
        values.auth_mode,
        "`embedded` (our authorization server), `jwt` or `introspection` (an external one), `none` (local only).",
        "embedded",
    )
    auth_server_url: str | None = _setting(
        "AUTH_SERVER_URL",
        values.optional_url,
        "Issuer URL of the authorization server. Embedded: the base URL; jwt/introspection and the "
        "standalone authorization server app: `http://localhost:3001`.",
        None,
    )
    resource_url: str | None = _setting(
        "RESOURCE_URL",
        values.optional_url,
        "Canonical URI of the MCP resource tokens are bound to (RFC 8707); default: base URL + `/mcp`.",
        None,
    )
    auth_resources: tuple[str, ...] = _setting(
        "AUTH_RESOURCES",
        values.csv,
        "Resources the authorization server issues tokens for; default: the resource URL alone.",
        (),
    )
    scopes_supported: tuple[str, ...] = _setting(
        "SCOPES_SUPPORTED",
        values.scopes,
        "Scopes the authorization server grants (and, without offline_access, what resource metadata lists).",
        ("mcp", "mcp:admin", "offline_access"),
    )
    required_scope: str = _setting(
        "REQUIRED_SCOPE", str.strip, "Scope a token needs for the MCP endpoints (403 without it).", "mcp"
    )
    oauth_cimd_allow_loopback: str = _setting(
        "OAUTH_CIMD_ALLOW_LOOPBACK",
        values.switch,
        "`on`: client metadata documents may be fetched from http://127.0.0.1 / http://localhost (development "
        "and tests only; logged as a warning at start-up).",
        "off",
    )
    oauth_exchange_audiences: tuple[str, ...] = _setting(
        "OAUTH_EXCHANGE_AUDIENCES",
        values.csv,
        "Audiences the authorization server exchanges tokens for (RFC 8693, resource servers only); empty: no "
        "token exchange.",
        (),
    )
    oauth_exchange_token_ttl: float = _setting(
        "OAUTH_EXCHANGE_TOKEN_TTL",
        values.positive_float,
        "Longest lifetime of an exchanged token (never beyond the subject token's `exp`), seconds.",
        300.0,
    )
    downstream_api_url: str | None = _setting(
        "DOWNSTREAM_API_URL",
        values.optional_url,
        "A downstream API the demo tool fetchDownstreamProfile calls with an exchanged token; unset: no such tool.",
        None,
    )
    access_token_ttl: float = _setting(
        "ACCESS_TOKEN_TTL", values.positive_float, "Lifetime of access tokens (JWT `exp`), seconds.", 3600.0
    )
    refresh_token_ttl: float = _setting(
        "REFRESH_TOKEN_TTL",
        values.positive_float,
        "Lifetime of refresh tokens (rotated on every use), seconds.",
        2592000.0,
    )
    code_ttl: float = _setting(
        "CODE_TTL", values.code_ttl, "Lifetime of authorization codes, seconds (at most 600).", 300.0
    )
    introspection_client_id: str | None = _setting(
        "INTROSPECTION_CLIENT_ID",
        values.optional_str,
        "Resource-server credentials for RFC 7662 introspection (sent by the MCP server, accepted by the "
        "authorization server).",
        None,
    )
    introspection_client_secret: str | None = _setting(
        "INTROSPECTION_CLIENT_SECRET", values.optional_str, "Secret of the introspection credentials.", None
    )
    introspection_cache_ttl: float = _setting(
        "INTROSPECTION_CACHE_TTL",
        values.positive_float,
        "Longest a positive introspection answer is reused (never beyond the token's `exp`), seconds.",
        30.0,
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "TRUSTED_PROXIES",
        values.csv,
        "Proxy addresses or CIDRs whose `X-Forwarded-For` is believed (rate limits key on the client IP).",
        (),
    )
    rate_limit_per_minute: int = _setting(
        "RATE_LIMIT_PER_MINUTE",
        values.positive_int,
        "Requests per minute and client IP to each of /register, /authorize and /token.",
        60,
    )
    session_idle_ttl: float = _setting(
        "SESSION_IDLE_TTL", values.positive_float, "Seconds a session may stay idle before it is reaped.", 300.0
    )
    subscription_update_interval: float = _setting(
        "SUBSCRIPTION_UPDATE_INTERVAL",
        values.positive_float,
        "Seconds between `notifications/resources/updated` for each subscribed resource.",
        10.0,
    )
    log_message_interval: float = _setting(
        "LOG_MESSAGE_INTERVAL",
        values.positive_float,
        "Seconds between the demo log notifications (random level, filtered by `logging/setLevel`).",
        15.0,
    )
    features: tuple[str, ...] = _setting(
        "FEATURES",
        values.feature_modules,
        "Comma-separated feature modules to serve: `reference`, `conformance`, or dotted paths of your own "
        "modules exposing `build_catalog()`.",
        FEATURE_MODULES,
    )
    max_body_bytes: int = _setting(
        "MAX_BODY_BYTES", values.positive_int, "Largest accepted POST body in bytes (413 beyond).", 4 * 1024 * 1024
    )
    body_read_timeout: float = _setting(
        "BODY_READ_TIMEOUT",
        values.positive_float,
        "Seconds a client gets to send a whole request body (MCP and OAuth endpoints); 408 and the connection "
        "closed beyond.",
        BODY_READ_TIMEOUT,
    )
    max_sessions: int = _setting(
        "MAX_SESSIONS", values.positive_int, "Live sessions per instance before new ones get 503.", 100_000
    )
    allowed_hosts: tuple[str, ...] = _setting(
        "ALLOWED_HOSTS",
        values.csv,
        "Extra Host header values accepted (the base URL's host and loopback names always are).",
        (),
    )
    allowed_origins: tuple[str, ...] = _setting(
        "ALLOWED_ORIGINS",
        values.csv,
        "Extra browser origins accepted (the base URL's origin and loopback origins always are).",
        (),
    )
    heartbeat_interval: float = _setting(
        "HEARTBEAT_INTERVAL", values.positive_float, "Seconds between `: ping` comments on idle SSE streams.", 15.0
    )
    sse_retry_ms: int = _setting(
        "SSE_RETRY_MS", values.positive_int, "The `retry:` reconnection delay sent to SSE clients, in ms.", 1000
    )
    write_stall_limit: float = _setting(
        "WRITE_STALL_LIMIT",
        values.positive_float,
        "Seconds one write of a response (one SSE event, or a whole non-streamed body) may wait for a client that "
        "does not read; then its connection is dropped (an SSE stream's session is left to the idle reaper).",
        WRITE_STALL_LIMIT,
    )
    event_log_max_events: int = _setting(
        "EVENT_LOG_MAX_EVENTS",
        values.positive_int,
        "Events kept per stream for `Last-Event-ID` replay; older ones are dropped.",
        MAX_EVENTS_PER_STREAM,
    )
    client_request_timeout: float = _setting(
        "CLIENT_REQUEST_TIMEOUT",
        values.positive_float,
        "Seconds a tool waits for the client to answer sampling or elicitation.",
        120.0,
    )
    request_state_keys: tuple[str, ...] = _setting(
        "REQUEST_STATE_KEYS",
        values.csv,
        "Secrets sealing a multi round-trip request's `requestState` (2026 era), newest first: the first seals, "
        "all open (rotation). Unset: one is generated and kept in Redis (shared by every instance), or per "
        "process on the memory backend.",
        (),
    )
    request_state_ttl: float = _setting(
        "REQUEST_STATE_TTL",
        values.positive_float,
        "Seconds a client has to answer an `InputRequiredResult` and retry before its `requestState` expires.",
        600.0,
    )
    max_requests_in_flight: int = _setting(
        "MAX_REQUESTS_IN_FLIGHT",
        values.positive_int,
        "2026-era requests running at once per instance before new ones get 503 (listeners count apart).",
        10_000,
    )
    max_listeners: int = _setting(
        "MAX_LISTENERS",
        values.positive_int,
        "Open `subscriptions/listen` streams per instance before new ones get 503.",
        10_000,
    )
    task_ttl: float = _setting(
        "TASK_TTL",
        values.positive_float,
        "Seconds a task is kept from its creation (its `ttlMs`; the most a 2025 client may ask for); work still "
        "running then is stopped and the task is gone.",
        3600.0,
    )
    task_lease: float = _setting(
        "TASK_LEASE",
        values.positive_float,
        "Seconds an instance holds a task's work without renewing it; a lost instance's tasks move on after this. "
        "Every instance sharing a Redis must use the same value.",
        30.0,
    )
    task_workers: int = _setting(
        "TASK_WORKERS", values.positive_int, "Tasks one instance runs at once (more wait in the queue).", 32
    )
    tasks_per_subject: int = _setting(
        "TASKS_PER_SUBJECT", values.positive_int, "Unfinished tasks one user may have before new ones are refused.", 100
    )
    task_queue_limit: int = _setting(
        "TASK_QUEUE_LIMIT",
        values.positive_int,
        "Tasks waiting or running across all instances before new ones are refused.",
        10_000,
    )
    task_max_result_bytes: int = _setting(
        "TASK_MAX_RESULT_BYTES",
        values.positive_int,
        "Bytes of a task's result (JSON); a larger one fails the task with a clear error instead of being stored.",
        1024 * 1024,
    )
    log_level: str = _setting("LOG_LEVEL", values.log_level, "Python log level of the server's own log.", "INFO")
    log_format: str = _setting(
        "LOG_FORMAT",
        values.log_format,
        "`json`: one JSON object per line (see Logs below); `text`: one human-readable line per record.",
        "json",
    )
    access_log: str = _setting(
        "ACCESS_LOG",
        values.switch,
        "`on`: one INFO line per HTTP request; `off`: the same line at DEBUG (5xx answers are always logged).",
        "off",
    )
    metrics: str = _setting(
        "METRICS",
        values.metrics,
        "Prometheus metrics: `off`, `on` (GET /metrics on the main port, unauthenticated) or `host:port` "
        "(a separate listener, e.g. `127.0.0.1:9100`).",
        "off",
    )

    @property
    def base_origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def resource(self) -> str:
        """The canonical MCP resource URI (token audience)."""
        return self.resource_url or self.mcp_url

    @property
    def issuer(self) -> str:
        """The issuer this MCP server trusts (and, embedded, is)."""
        if self.auth_server_url:
            return self.auth_server_url
        return self.base_url if self.auth_mode == "embedded" else DEFAULT_EXTERNAL_AUTH_SERVER

    @property
    def standalone_issuer(self) -> str:
        """The issuer of the standalone authorization server app (`refserver.oauth.app`)."""
        return self.auth_server_url or DEFAULT_EXTERNAL_AUTH_SERVER

    @property
    def resources(self) -> tuple[str, ...]:
        return self.auth_resources or (self.resource,)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv_path: str | os.PathLike[str] | None = ".env"
    ) -> Settings:
        """Read settings; the process environment wins over `.env`."""
        merged: dict[str, str] = {}
        if dotenv_path is not None and Path(dotenv_path).is_file():
            from dotenv import dotenv_values

            merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        merged.update(os.environ if environ is None else environ)

        known = {f.metadata["env"]: f for f in attrs.fields(cls)}
        unknown = sorted(
            name for name in merged if name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :] not in known
        )
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}; known settings: "
                + ", ".join(ENV_PREFIX + name for name in sorted(known))
            )
        values: dict[str, Any] = {}
        for env_name, field in known.items():
            raw = merged.get(ENV_PREFIX + env_name)
            if raw is None:
                continue
            try:
                values[field.name] = field.metadata["parse"](raw.strip())
            except ValueError as exc:
                raise ConfigError(f"{ENV_PREFIX}{env_name}={raw!r}: {exc}") from exc
        return cls(**values)


def documented_settings() -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every setting, in declaration order: the source of the docs table."""
    rows = []
    for field in attrs.fields(Settings):
        default = field.default
        if isinstance(default, tuple):
            shown = ",".join(default) or "(empty)"
        elif isinstance(default, bool):
            shown = "true" if default else "false"
        else:
            shown = "(unset)" if default is None else default
        rows.append((ENV_PREFIX + field.metadata["env"], str(shown), field.metadata["doc"]))
    return rows


def settings_table_markdown() -> str:
    """The settings table of docs/operations.md (a test keeps the two identical)."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | `{default}` | {doc} |" for name, default, doc in documented_settings()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table_markdown())
