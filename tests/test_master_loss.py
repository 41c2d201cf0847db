"""A killed Hypercorn master takes its worker with it: launched exactly as the README does, the master SIGKILLed, no
process of the server is left within the bound, the port refuses connections, and the same port serves again. On
Redis, what the lost instance held (a session) is served by another instance afterwards."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import trio

from refserver.master_watch import MASTER_POLL_INTERVAL
from tests.conftest import ServerProcess, free_port, initialize, server_env, session_headers, wait_until
from tests.redis_server import RedisServer

GRACEFUL_TIMEOUT: Final = 5.0
"""`graceful_timeout` of every shipped Hypercorn configuration: the longest a drain may take."""
BOUND: Final = MASTER_POLL_INTERVAL + GRACEFUL_TIMEOUT + 2.0
"""The worker notices within one poll, drains within the graceful timeout; 2 s of slack for a loaded machine."""


def live_processes_of_group(pgid: int) -> list[int]:
    """The processes of a process group that are not zombies (a re-parented worker's zombie is not serving)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def kill_master(server: ServerProcess) -> int:
    assert server.process is not None
    pgid = server.process.pid  # started in a new session: the master leads its process group
    assert len(live_processes_of_group(pgid)) >= 2, "expected a master and its worker"
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    return pgid


@pytest.mark.parametrize(
    ("app", "config"),
    [("refserver.app:app", "hypercorn.toml"), ("refserver.oauth.app:app", "hypercorn-auth.toml")],
)
async def test_a_killed_master_takes_its_worker_with_it(app: str, config: str, tmp_path: Path) -> None:
    port = free_port()
    env = server_env(base_url=f"http://127.0.0.1:{port}", auth_mode="embedded")
    server = ServerProcess(port, env, tmp_path / "server.log")
    server.start_app(app, config)
    assert server.process is not None
    pgid = server.process.pid
    try:
        kill_master(server)
        killed_at = time.monotonic()
        await wait_until(lambda: not live_processes_of_group(pgid), BOUND, "no process of the server alive")
        gone_after = time.monotonic() - killed_at
        assert refuses_connections(port)
        assert "is gone: shutting this worker down" in server.log()
    finally:
        for pid in live_processes_of_group(pgid):  # a worker that failed the test must not outlive it
            os.kill(pid, signal.SIGKILL)
    again = ServerProcess(port, env, tmp_path / "again.log")
    again.start_app(app, config)  # the same port: nothing holds it any more
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            assert (await http.get(f"{again.url}/health")).status_code == 200
    finally:
        again.stop()
    print(f"\n{config}: the worker was gone {gone_after:.2f}s after its master's SIGKILL (bound {BOUND}s)")


async def test_a_killed_masters_sessions_are_served_by_another_instance(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {"redis_url": redis_server.url, "base_url": "http://127.0.0.1:3232"}
    settings["allowed_hosts"] = "127.0.0.1"
    lost = ServerProcess(free_port(), server_env(**settings), tmp_path / "lost.log")
    other = ServerProcess(free_port(), server_env(**settings), tmp_path / "other.log")
    lost.start()
    other.start()
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            session_id = await initialize(http, lost.mcp_url)
            pgid = kill_master(lost)
            await wait_until(lambda: not live_processes_of_group(pgid), BOUND, "no process of the lost instance")
            assert refuses_connections(lost.port)
            with trio.fail_after(10):
                body = {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": "still here"}},
                }
                answer = await http.post(other.mcp_url, json=body, headers=session_headers(session_id))
            assert answer.status_code == 200, answer.text
            assert "still here" in answer.text
            lost.start()  # the same port, on the same Redis: the session is served there again too
            again = await http.post(lost.mcp_url, json=body, headers=session_headers(session_id))
            assert again.status_code == 200 and "still here" in again.text, again.text
    finally:
        other.stop()
        lost.stop()
