"""Shared fixtures: real Hypercorn processes on free ports, real redis-server processes, HTTP clients."""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN = [sys.executable, "-m", "hypercorn"]
SERVER_START_TIMEOUT = 20.0
"""Seconds a fresh Hypercorn process gets to answer /health (spawned worker + imports)."""
POLL_INTERVAL = 0.02
"""Seconds between two looks at a condition polled across a process boundary (`wait_until`, start-up)."""
PORT_RELEASE_TIMEOUT = 5.0
"""Seconds a server's port gets to be let go by whatever held it before the server starts."""

INIT_PARAMS = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"sampling": {}, "elicitation": {"form": {}}},
    "clientInfo": {"name": "refserver-tests", "version": "0"},
}
POST_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
MODERN_VERSION = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "elicitation": {"form": {}}, "roots": {}},
    "io.modelcontextprotocol/clientInfo": {"name": "refserver-tests", "version": "0"},
}


def modern_request(
    method: str, params: dict[str, Any] | None = None, request_id: int | str = 1, **meta: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request (body, headers): the envelope in `_meta` (plus `meta`), and its routing headers."""
    body_params = {**(params or {}), "_meta": {**MODERN_META, **meta}}
    headers = {**POST_HEADERS, "MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
    name_param = {"resources/read": "uri", "tools/call": "name", "prompts/get": "name"}.get(method, "taskId")
    named = body_params.get(name_param)
    named_methods = ("tools/call", "prompts/get", "resources/read", "tasks/get", "tasks/update", "tasks/cancel")
    if method in named_methods and isinstance(named, str):
        headers["Mcp-Name"] = named
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": body_params}, headers


@attrs.define
class ServerProcess:
    """A real `hypercorn --config hypercorn.toml refserver.app:app` on its own port."""

    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    def start(self) -> None:
        self.start_app("refserver.app:app", "hypercorn.toml")

    def start_app(self, app: str, config: str) -> None:
        """Start `app` (e.g. the standalone authorization server) with its own Hypercorn config."""
        self._wait_for_port_to_be_free()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*HYPERCORN, "--config", config, "--bind", f"127.0.0.1:{self.port}", app],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # Synchronous, unlike `wait_until`: called from plain fixtures and from inside running Trio tests alike,
        # where no loop can be entered. It polls the condition itself (/health answers) and watches for an exit.
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        with httpx.Client(timeout=1.0) as probe:  # one client: a new one per attempt costs ~30 ms of CPU (TLS setup)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited at start-up:\n{self.log()}")
                try:
                    if probe.get(f"{self.url}/health").status_code in (200, 503):
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(POLL_INTERVAL)
        self.stop()
        raise RuntimeError(f"server did not start in {SERVER_START_TIMEOUT}s:\n{self.log()}")

    def _wait_for_port_to_be_free(self) -> None:
        """The start-up probe cannot tell this server from another one listening on its port: refuse to start then.

        A short grace, for a restart on the same port while the previous process's worker is still closing."""
        deadline = time.monotonic() + PORT_RELEASE_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
            except OSError:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"port {self.port} is already taken by another listener")
            time.sleep(POLL_INTERVAL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], seconds: float, what: str) -> float:
    """Wait for `predicate` (a loaded machine may take a while to get there); fail after `seconds`.

    The one waiter of the tests: the predicate may be a plain or an async function (polling another process,
    where no event can cross the process boundary). Returns the seconds it took.
    """
    started = trio.current_time()
    with trio.move_on_after(seconds):
        while True:
            outcome = predicate()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return trio.current_time() - started
            await trio.sleep(POLL_INTERVAL)  # the poll interval of a condition that no event can signal
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def server_env(**settings: Any) -> dict[str, str]:
    """Environment for a server process. The MCP-feature tests run with `auth_mode=none` unless they say
    otherwise; the OAuth tests (test_oauth_*.py) and the conformance run exercise the real flow."""
    settings.setdefault("auth_mode", "none")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFSERVER_")}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in settings.items():
        env[f"REFSERVER_{key.upper()}"] = str(value)
    return env


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(**settings: Any) -> ServerProcess:
        port = free_port()
        settings.setdefault("base_url", f"http://127.0.0.1:{port}")
        server = ServerProcess(port, server_env(**settings), tmp_path / f"server-{port}.log")
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the many tests that only need a fresh session each.

    With access lines: written when the server is done with a request (even one whose client left), they let a
    test wait for that instead of guessing how long it takes.
    """
    port = free_port()
    server = ServerProcess(
        port,
        server_env(
            base_url=f"http://127.0.0.1:{port}",
            subscription_update_interval=0.5,
            log_message_interval=0.5,
            access_log="on",
        ),
        tmp_path_factory.mktemp("shared") / "server.log",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as client:
        yield client


async def initialize(http: httpx.AsyncClient, mcp_url: str, **params: Any) -> str:
    """Open a session the raw way; return its id."""
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {**INIT_PARAMS, **params}}
    response = await http.post(mcp_url, json=body, headers=POST_HEADERS)
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    accepted = await http.post(mcp_url, json=note, headers={**POST_HEADERS, "Mcp-Session-Id": session_id})
    assert accepted.status_code == 202
    return session_id


def session_headers(session_id: str, version: str = "2025-11-25") -> dict[str, str]:
    return {**POST_HEADERS, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": version}


# --- redis-server processes (tests/redis_server.py) ---

from tests.redis_server import RedisServer  # noqa: E402  (appended section; keeps the fixtures typed)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to be killed, paused or restarted."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def shared_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for tests that only read and write (each under its own key prefix); never fault it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()
