"""Real processes for the OAuth topologies: the standalone authorization server (`refserver.oauth.app:app`),
MCP servers on ports chosen in advance (so each side can name the other before either starts), and a way to
start several of them at once."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import attrs

from tests.conftest import ServerProcess, free_port, server_env


class Process(Protocol):
    def start(self) -> None: ...

    def stop(self) -> int | None: ...


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports, none handed out before (see `free_port`)."""
    return [free_port() for _ in range(count)]


@attrs.define
class AuthServerProcess(ServerProcess):
    """A real `hypercorn --config hypercorn-auth.toml refserver.oauth.app:app`; its issuer is its own URL.

    `start` may be called again after `stop`: the new process binds the same port (and, with a shared Redis,
    finds the same signing keys and tokens).
    """

    def start(self) -> None:
        self.start_app("refserver.oauth.app:app", "hypercorn-auth.toml")

    def kill(self) -> None:
        """SIGKILL to the whole process group (Hypercorn's parent and its worker): an abrupt outage."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def auth_server(
    directory: Path, *, resources: list[str], port: int | None = None, **settings: Any
) -> AuthServerProcess:
    """A standalone authorization server (not started) issuing tokens for `resources`."""
    port = port or free_ports(1)[0]
    settings.setdefault("auth_server_url", f"http://127.0.0.1:{port}")
    settings.setdefault("base_url", f"http://127.0.0.1:{port}")
    settings["auth_resources"] = ",".join(resources)
    return AuthServerProcess(port, server_env(**settings), directory / f"auth-{port}.log")


def mcp_server(directory: Path, *, port: int | None = None, **settings: Any) -> ServerProcess:
    """An MCP server (not started); pass `auth_mode` explicitly (server_env defaults it to "none")."""
    port = port or free_ports(1)[0]
    settings.setdefault("base_url", f"http://127.0.0.1:{port}")
    return ServerProcess(port, server_env(**settings), directory / f"mcp-{port}.log")


def start_all(*processes: Process) -> None:
    """Start every process concurrently (each start waits for its /health); raise the first failure."""
    with ThreadPoolExecutor(max_workers=len(processes)) as pool:
        for future in [pool.submit(process.start) for process in processes]:
            future.result()


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    """Start the processes together; stop every one of them on the way out, whatever happened."""
    try:
        start_all(*processes)
        yield
    finally:
        for process in processes:
            process.stop()
