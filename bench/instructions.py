"""IR: instructions per request, counted by callgrind: the one measure a shared, noisy machine cannot disturb.

Time per request mixes how much work there is with how fast the CPU gets through it (caches, branch predictors,
whatever else the core runs). Counting the instructions separates the two. Each server runs under
`valgrind --tool=callgrind` with instrumentation off; once it is warm, the client switches counting on for N
sequential keep-alive requests (`callgrind_control -i on`), off again, and dumps: the dump's total over N is the
server process's user-space instructions per request. The kernel's share is not counted: by strace, S0A and S1
make the same system calls per request (two `sendto`, two `recvfrom`, one `epoll_ctl`) but for one `getrandom` of
S1's.

Arms, each the same echo the floods send:
- S0A: the bare ASGI function on Hypercorn's trio worker (`bench/bare_asgi_app.py`): the stack alone;
- PJ: the SDK's server answering JSON on uvicorn (the peer of the speed goals);
- S1 and M1: refserver itself (2025 session; 2026, no session), auth on, memory backend;
- IP S1 and IP M1: refserver's application called in-process (`bench.inprocess --callgrind`): our own code alone.

S1 minus (S0A + IP S1) is what serving our answers costs the stack beyond a bare one; the floods' time per request
divided by these counts is the rate each arm's instructions run at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import trio

from bench.mcpclient import ECHO_CALL, POST_HEADERS, auth_headers, new_session, obtain_token, session_headers
from bench.procs import HYPERCORN_CONFIG, ROOT, Proc, pinned, refserver_env
from bench.rawhttp import Connection, HttpError

WARMUP_REQUESTS: Final = 200
"""Requests before counting starts: first-call paths, caches and the token cache are warm."""
REQUESTS_PER_CONNECTION: Final = 1000
"""Hypercorn closes a keep-alive connection after this many requests; the warm-up and the count share one."""
CONTROL_TIMEOUT: Final = 60.0
"""Seconds `callgrind_control` may take to reach a process (it waits for the process's next check)."""
MODERN_VERSION: Final = "2026-07-28"
MODERN_ECHO: Final = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},'
    b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    b'"io.modelcontextprotocol/clientCapabilities":{},'
    b'"io.modelcontextprotocol/clientInfo":{"name":"refserver-bench","version":"0"}}}}'
)


def valgrind() -> str | None:
    return shutil.which("valgrind")


def callgrind_command(command: Sequence[str], out_file: Path) -> list[str]:
    """`command` under callgrind, counting nothing until told (`callgrind_control -i on`)."""
    binary = valgrind() or "valgrind"
    return [binary, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}", *command]


def control(pid: int, *arguments: str) -> None:
    command = ["callgrind_control", *arguments, str(pid)]
    subprocess.run(command, check=True, capture_output=True, timeout=CONTROL_TIMEOUT)


def counted_total(out_file: Path, dumps_before: int) -> int:
    """The instruction total of the dump written since `dumps_before` dumps existed (`<out_file>.<n>`)."""
    dump = Path(f"{out_file}.{dumps_before + 1}")
    deadline = time.monotonic() + CONTROL_TIMEOUT
    while time.monotonic() < deadline:
        if dump.exists():
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no dump {dump}")


class Counter:
    """Counts one process's instructions around what it is asked to do; each count is one dump of it."""

    def __init__(self, pid: int, out_file: Path) -> None:
        self.pid = pid
        self.out_file = out_file
        self.dumps = 0

    def start(self) -> None:
        control(self.pid, "-z")
        control(self.pid, "-i", "on")

    def stop(self) -> int:
        control(self.pid, "-i", "off")
        control(self.pid, "-d")
        total = counted_total(self.out_file, self.dumps)
        self.dumps += 1
        return total


async def count_echoes(port: int, counter: Counter, headers: dict[str, str], body: bytes, requests: int) -> float:
    """Instructions per request of `requests` sequential echoes on one warm keep-alive connection."""
    if WARMUP_REQUESTS + requests > REQUESTS_PER_CONNECTION:
        raise ValueError(f"at most {REQUESTS_PER_CONNECTION - WARMUP_REQUESTS} requests are counted on one connection")
    conn = await Connection.open("127.0.0.1", port)
    try:
        for _ in range(WARMUP_REQUESTS):
            await _echo(conn, headers, body)
        await trio.to_thread.run_sync(counter.start)
        for _ in range(requests):
            await _echo(conn, headers, body)
        total = await trio.to_thread.run_sync(counter.stop)
    finally:
        await conn.aclose()
    return total / requests


async def _echo(conn: Connection, headers: dict[str, str], body: bytes) -> None:
    answer = await conn.request("POST", "/mcp", headers, body)
    if answer.status != 200 or b"Echo: hi" not in answer.body:
        raise HttpError(f"echo: HTTP {answer.status} {answer.body[:200]!r}")


def server_procs(directory: Path, ports: dict[str, int], cpu: int | None) -> dict[str, Proc]:
    """S0A, PJ and refserver (S1 and M1) under callgrind, one process each (Hypercorn with `--workers 0`: the
    worker is the process valgrind runs)."""

    def hypercorn(app: str, port: int) -> list[str]:
        server = [sys.executable, "-m", "hypercorn", "--config", str(HYPERCORN_CONFIG), "--workers", "0"]
        return [*server, "--bind", f"127.0.0.1:{port}", app]

    peer = [sys.executable, "-m", "bench.peers.sdk_echo_server", "--port", str(ports["PJ"]), "--json"]
    commands = {
        "S0A": (hypercorn("bench.bare_asgi_app:app", ports["S0A"]), {}, "/health", False),
        "PJ": (peer, {}, "/mcp", True),
        "S1": (hypercorn("refserver.app:app", ports["S1"]), refserver_env(ports["S1"]), "/health", False),
    }
    procs = {}
    for name, (command, env, health, any_answer) in commands.items():
        out_file = directory / f"IR-{name}.callgrind"
        procs[name] = Proc(
            f"IR-{name}-callgrind",
            pinned(callgrind_command(command, out_file), cpu),
            env or {k: v for k, v in os.environ.items() if not k.startswith("REFSERVER_")},
            directory / f"IR-{name}.log",
            f"http://127.0.0.1:{ports[name]}{health}",
            any_answer=any_answer,
        )
    return procs


async def count_servers(
    procs: dict[str, Proc], ports: dict[str, int], directory: Path, requests: int
) -> dict[str, float]:
    counters = {name: Counter(proc.pid, directory / f"IR-{name}.callgrind") for name, proc in procs.items()}
    counts: dict[str, float] = {}
    counts["S0A"] = await count_echoes(ports["S0A"], counters["S0A"], dict(POST_HEADERS), ECHO_CALL, requests)
    pj_session = await new_session(ports["PJ"], "")
    counts["PJ"] = await count_echoes(ports["PJ"], counters["PJ"], session_headers("", pj_session), ECHO_CALL, requests)
    token = await obtain_token(ports["S1"])
    session = await new_session(ports["S1"], token)
    counts["S1"] = await count_echoes(ports["S1"], counters["S1"], session_headers(token, session), ECHO_CALL, requests)
    modern = {
        **POST_HEADERS,
        **auth_headers(token),
        "MCP-Protocol-Version": MODERN_VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    counts["M1"] = await count_echoes(ports["S1"], counters["S1"], modern, MODERN_ECHO, requests)
    return counts


def count_in_process(directory: Path, requests: int, cpu: int | None, log_path: Path) -> dict[str, float]:
    """`bench.inprocess --callgrind` under callgrind: it counts its own S1 and M1 batches."""
    out_file = directory / "IR-IP.callgrind"
    command = [sys.executable, "-m", "bench.inprocess", "--callgrind", str(out_file), "--requests", str(requests)]
    with log_path.open("ab") as log:
        output = subprocess.run(
            pinned(callgrind_command(command, out_file), cpu),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            check=True,
            timeout=900,
        ).stdout
    result: dict[str, float] = json.loads(output.decode().strip().splitlines()[-1])
    return result
