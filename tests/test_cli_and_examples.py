"""The developer token command (`python -m refserver token`) and the examples in examples/, run for real.

Each runs as its own process against real servers, the way a developer would run it: the token command
against the embedded authorization server, a standalone one (jwt mode), and a Redis-backed server;
examples/client.py (the official SDK with its OAuth provider, every feature) and examples/curl-examples.sh
(the raw flow), so that neither can rot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import trio

from refserver.config import settings_table_markdown
from tests.auth_servers import auth_server, free_ports, mcp_server, running
from tests.conftest import INIT_PARAMS, POST_HEADERS, ROOT, ServerProcess, free_port, server_env
from tests.redis_server import RedisServer

COMMAND_TIMEOUT = 60.0
"""Upper bound on one command (the client example waits for a resource update and a log message)."""
EXAMPLES = ROOT / "examples"


async def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(COMMAND_TIMEOUT):
        return await trio.run_process(
            [str(arg) for arg in argv], capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT, env=env
        )


async def token_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await run(sys.executable, "-m", "refserver", "token", *args)


def claims(jwt: str) -> dict[str, Any]:
    header, payload, signature = jwt.split(".")
    assert header and signature
    document: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return document


async def initialize_with(mcp_url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20.0) as http:
        return await http.post(
            mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS},
            headers={**POST_HEADERS, "Authorization": f"Bearer {token}"},
        )


def printed_token(result: subprocess.CompletedProcess[bytes]) -> str:
    """The command's stdout must be the access token and nothing else."""
    assert result.returncode == 0, result.stderr.decode()
    stdout = result.stdout.decode()
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
    token = stdout.strip()
    assert token.count(".") == 2 and " " not in token, stdout
    return token


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An embedded-mode server with fast subscription updates and log messages (the client example waits)."""
    port = free_port()
    server = ServerProcess(
        port,
        server_env(
            auth_mode="embedded",
            base_url=f"http://127.0.0.1:{port}",
            subscription_update_interval=0.5,
            log_message_interval=0.5,
        ),
        tmp_path_factory.mktemp("examples") / "server.log",
    )
    server.start()
    yield server
    server.stop()


# --- the token command ---------------------------------------------------------------------------------


async def test_token_command_prints_an_access_token_that_opens_a_session(embedded: ServerProcess) -> None:
    token = printed_token(await token_command("--user", "alice", "--base-url", embedded.url))
    jwt = claims(token)
    assert jwt["sub"] == "alice"
    assert jwt["iss"] == embedded.url
    assert jwt["aud"] == embedded.mcp_url
    assert "mcp" in jwt["scope"].split()

    opened = await initialize_with(embedded.mcp_url, token)
    assert opened.status_code == 200, opened.text
    assert opened.headers["mcp-session-id"]
    refused = await initialize_with(embedded.mcp_url, token[:-4] + "AAAA")
    assert refused.status_code == 401


async def test_token_command_json_and_scope(embedded: ServerProcess) -> None:
    # A trailing slash, and a URL that already names the MCP endpoint, are both fine.
    result = await token_command("--user", "bob", "--base-url", embedded.mcp_url + "/", "--scope", "mcp", "--json")
    assert result.returncode == 0, result.stderr.decode()
    response = json.loads(result.stdout)
    assert response["token_type"] == "Bearer"
    assert response["scope"] == "mcp"
    assert response["refresh_token"] and response["client_id"]
    assert claims(response["access_token"])["sub"] == "bob"
    assert (await initialize_with(embedded.mcp_url, response["access_token"])).status_code == 200


async def test_token_command_errors_are_clear_and_never_on_stdout(
    embedded: ServerProcess, make_server: Callable[..., ServerProcess]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    open_server = make_server()  # REFSERVER_AUTH_MODE=none
    cases = {
        ("--user", "alice", "--base-url", nowhere): f"cannot reach {nowhere}",
        ("--user", "alice", "--base-url", open_server.url): "this server does not require a token",
        ("--user", "not a user!", "--base-url", embedded.url): "a user id is 1-64 letters",
        ("--user", "alice", "--base-url", embedded.url, "--scope", "admin"): "invalid_scope",
        ("--user", "alice", "--base-url", "localhost:3232"): "--base-url must be an http(s) URL",
    }
    for args, message in cases.items():
        result = await token_command(*args)
        assert result.returncode == 1, (args, result)
        assert result.stdout == b"", args
        stderr = result.stderr.decode()
        assert stderr.startswith("refserver token: error: "), stderr
        assert message in stderr, (args, stderr)
        assert "Traceback" not in stderr and "<" not in stderr, stderr

    usage = await run(sys.executable, "-m", "refserver")
    assert usage.returncode == 2
    assert b"token" in usage.stderr and b"settings" in usage.stderr


async def test_settings_command_prints_the_settings_table() -> None:
    result = await run(sys.executable, "-m", "refserver", "settings")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == settings_table_markdown() + "\n"
    as_json = await run(sys.executable, "-m", "refserver", "settings", "--format", "json")
    rows = json.loads(as_json.stdout)
    assert {"variable": "REFSERVER_BASE_URL", "default": "http://localhost:3232"}.items() <= rows[0].items()


async def test_token_command_against_a_standalone_authorization_server(tmp_path: Path) -> None:
    as_port, mcp_port = free_ports(2)
    auth = auth_server(tmp_path, port=as_port, resources=[f"http://127.0.0.1:{mcp_port}/mcp"])
    mcp = mcp_server(tmp_path, port=mcp_port, auth_mode="jwt", auth_server_url=auth.url)
    with running(auth, mcp):
        token = printed_token(await token_command("--user", "carol", "--base-url", mcp.url))
        jwt = claims(token)
        assert (jwt["iss"], jwt["aud"], jwt["sub"]) == (auth.url, mcp.mcp_url, "carol")
        assert (await initialize_with(mcp.mcp_url, token)).status_code == 200

        auth.kill()
        down = await token_command("--user", "carol", "--base-url", mcp.url)
        assert down.returncode == 1 and down.stdout == b""
        stderr = down.stderr.decode()
        assert f"cannot reach {auth.url}" in stderr, stderr
        assert "authorization server" in stderr, stderr


async def test_token_command_against_a_redis_backed_server(
    redis_server: RedisServer, make_server: Callable[..., ServerProcess]
) -> None:
    server = make_server(auth_mode="embedded", redis_url=redis_server.url)
    token = printed_token(await token_command("--user", "dave@example.org", "--base-url", server.url))
    assert claims(token)["sub"] == "dave@example.org"
    assert (await initialize_with(server.mcp_url, token)).status_code == 200
    # The registration, grant and refresh token went to Redis, not to the process's memory.
    store = redis.Redis.from_url(redis_server.url)
    try:
        kinds = {key.decode().split(":")[3] for key in store.scan_iter("refserver:kv:oauth:*")}
    finally:
        store.close()
    assert {"client", "grant", "refresh"} <= kinds, kinds


# --- the examples --------------------------------------------------------------------------------------


async def test_client_example_uses_every_feature(embedded: ServerProcess) -> None:
    result = await run(
        sys.executable, EXAMPLES / "client.py", "--url", embedded.mcp_url, "--user", "erin", "--wait", "20"
    )
    transcript = result.stdout.decode()
    assert result.returncode == 0, transcript + result.stderr.decode()
    for expected in (
        "registered as client",
        "mock identity provider: signing in as 'erin'",
        "tokens received: Bearer access token",
        "connected to refserver",
        "echo -> Echo: hello from the example client",
        "add -> The sum of 2 and 3 is 5.",
        "<- notifications/progress: 3/3 Step 3 of 3",
        "longRunningOperation -> Long running operation completed.",
        "<- sampling/createMessage:",
        "sampleLLM -> LLM sampling result: Because air scatters blue light more than red.",
        "<- elicitation/create:",
        "elicitInputs -> ✅ User provided the requested information:",
        "getTinyImage -> This is a tiny image: | [image/png image,",
        "annotatedMessage ->",
        "getResourceReference -> ",
        "getWeather (structured) -> {",
        "resources/list: page 1 has 10",
        "resources/read test://static/resource/1 -> text",
        "resources/read test://static/resource/2 -> blob",
        "resources/templates/list: test://static/resource/{id}",
        "<- notifications/resources/updated: test://static/resource/3",
        "logging/setLevel debug",
        "<- notifications/message:",
        "prompts/get complex_prompt -> ['text', 'text', 'image']",
        "prompts/get resource_prompt -> ['text', 'resource']",
        "completion/complete complex_prompt style 'f' -> ['formal', 'friendly']",
        "== done: every feature worked",
    ):
        assert expected in transcript, f"{expected!r} missing from:\n{transcript}"


async def test_client_example_with_a_token_from_the_token_command(embedded: ServerProcess) -> None:
    token = printed_token(await token_command("--user", "frank", "--base-url", embedded.url))
    result = await run(sys.executable, EXAMPLES / "client.py", "--url", embedded.mcp_url, "--token", token)
    transcript = result.stdout.decode()
    assert result.returncode == 0, transcript + result.stderr.decode()
    assert "using the given access token" in transcript
    assert "registered as client" not in transcript
    assert "== done: every feature worked" in transcript


@pytest.mark.parametrize("json_tool", ["jq", "python3"])
async def test_curl_examples_script(embedded: ServerProcess, json_tool: str) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run examples/curl-examples.sh")
    if json_tool == "jq" and shutil.which("jq") is None:
        pytest.skip("jq is not installed (the script falls back to python3, tested too)")
    env = {
        **os.environ,
        "BASE_URL": embedded.url,
        "USER_ID": "grace",
        "NO_JQ": "1" if json_tool == "python3" else "",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = await run("bash", EXAMPLES / "curl-examples.sh", env=env)
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    for expected in (
        "HTTP 401  WWW-Authenticate: Bearer resource_metadata=",
        f"authorization server: {embedded.url}",
        'HTTP 200: "Allow curl example to use this MCP server?"',
        "code: ",
        "(state and iss checked)",
        "server: refserver",
        "Echo: hello from curl",
        "Content-Type: text/event-stream",
        '"method":"notifications/progress"',
        "result: Long running operation completed. Duration: 1 seconds, Steps: 3.",
        "tools/call add with the new token: The sum of 2 and 3 is 5.",
        'supported versions: ["2026-07-28"]   result type: complete',
        "Echo: stateless curl",
        "round 1: resultType input_required, asks sampling/createMessage",
        "round 2: LLM sampling result: Hi from curl",
        '"method":"notifications/subscriptions/acknowledged"',
        "DELETE: HTTP 204",
        "a request in it gets HTTP 404",
        "== done: every step worked",
    ):
        assert expected in output, f"{expected!r} missing from:\n{output}"
