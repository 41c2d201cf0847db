"""MCP Apps: the `ui://` weather card and `getWeather`'s link to it, through the official client in both eras, and
the card itself running in headless Chromium inside a sandboxed iframe, with this test playing the host.

The host side follows the extension (SEP-1865, 2026-01-26): answer `ui/initialize`, wait for
`ui/notifications/initialized`, send `ui/notifications/tool-input` and `ui/notifications/tool-result`, and proxy
the card's own `tools/call` to the real server.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from refserver.features.reference import MCP_APP_MIME_TYPE, WEATHER_CARD_HTML, WEATHER_CARD_URI, weather_for
from tests.conftest import MODERN_VERSION, ServerProcess, free_port, server_env
from tests.test_browser import XSS_NAME, browser  # noqa: F401  (the module's headless Chromium fixture)

pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")

TEST_TIMEOUT = 30.0
BROWSER_WAIT = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    process = ServerProcess(
        port,
        server_env(base_url=f"http://127.0.0.1:{port}", auth_mode="none", features="reference"),
        tmp_path_factory.mktemp("mcp-apps") / "server.log",
    )
    process.start()
    yield process
    process.stop()


@asynccontextmanager
async def client_for(server: ServerProcess, mode: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(15)) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), mode=mode, cache=None) as client,
    ):
        yield client


async def all_resources(client: Client) -> list[types.Resource]:
    listed = await client.list_resources()
    resources = list(listed.resources)
    while listed.next_cursor:
        listed = await client.list_resources(cursor=listed.next_cursor)
        resources.extend(listed.resources)
    return resources


@pytest.mark.parametrize("mode", ["legacy", MODERN_VERSION])
async def test_the_tool_links_its_view_and_the_view_is_a_ui_resource(server: ServerProcess, mode: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with client_for(server, mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert tools["getWeather"].meta == {"ui": {"resourceUri": WEATHER_CARD_URI, "visibility": ["model", "app"]}}

            # Found through the tool, not the listing (which keeps the seed's 100 resources).
            assert WEATHER_CARD_URI not in {resource.uri for resource in await all_resources(client)}

            read = await client.read_resource(WEATHER_CARD_URI)
            [contents] = read.contents
            assert isinstance(contents, types.TextResourceContents)
            assert contents.mime_type == MCP_APP_MIME_TYPE
            assert contents.text == WEATHER_CARD_HTML
            csp = contents.meta["ui"]["csp"]  # type: ignore[index]
            assert all(domains == [] for domains in csp.values())

            # Without MCP Apps the tool is complete on its own: text and structured content.
            result = await client.call_tool("getWeather", {"location": "Paris"})
            assert result.structured_content == weather_for("Paris")
            assert json.loads(result.content[0].text) == weather_for("Paris")  # type: ignore[union-attr]


def test_the_view_is_self_contained() -> None:
    html = WEATHER_CARD_HTML
    assert html.startswith("<!DOCTYPE html>")
    # Nothing from elsewhere: no external script, stylesheet, image, font or frame, no network API.
    assert not re.search(r"\b(src|href)\s*=", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert not re.search(
        r"\b(fetch|XMLHttpRequest|WebSocket|EventSource|innerHTML|outerHTML|insertAdjacentHTML)\b", html
    )


HOST_SCRIPT = """
const html = arguments[0];
window.hostLog = [];
const frame = document.createElement('iframe');
frame.id = 'view';
frame.setAttribute('sandbox', 'allow-scripts allow-forms');
frame.style.width = '480px';
frame.style.height = '360px';
window.addEventListener('message', (event) => {
  if (event.source !== frame.contentWindow) return;
  const message = event.data;
  window.hostLog.push(message);
  if (message.method === 'ui/initialize') {
    frame.contentWindow.postMessage({jsonrpc: '2.0', id: message.id, result: {
      protocolVersion: '2026-01-26', hostInfo: {name: 'refserver test host', version: '0'},
      hostCapabilities: {serverTools: {}}, hostContext: {theme: 'dark', displayMode: 'inline'}}}, '*');
  }
});
frame.srcdoc = html;
document.body.appendChild(frame);
"""


def host_log(driver: Any) -> list[dict[str, Any]]:
    return list(driver.execute_script("return window.hostLog;"))


def wait_for_message(driver: Any, predicate: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + BROWSER_WAIT
    while time.monotonic() < deadline:
        found = [message for message in host_log(driver) if predicate(message)]
        if found:
            return found[-1]
        time.sleep(0.05)  # a poll interval: the page's script runs on its own
    raise AssertionError(f"the view never sent {what}: {host_log(driver)}")


def post_to_view(driver: Any, message: dict[str, Any]) -> None:
    driver.execute_script(
        "document.getElementById('view').contentWindow.postMessage(arguments[0], '*');", {"jsonrpc": "2.0", **message}
    )


def view_text(driver: Any, element_id: str, expected: str) -> str:
    deadline = time.monotonic() + BROWSER_WAIT
    text = ""
    while time.monotonic() < deadline:
        driver.switch_to.frame("view")
        try:
            text = driver.find_element("id", element_id).text
        finally:
            driver.switch_to.default_content()
        if text == expected:
            return text
        time.sleep(0.05)  # a poll interval, as above
    raise AssertionError(f"#{element_id} shows {text!r}, not {expected!r}")


async def test_the_view_renders_in_a_sandboxed_iframe_and_calls_the_tool_through_the_host(
    server: ServerProcess,
    browser: Any,  # noqa: F811
) -> None:
    async with client_for(server, MODERN_VERSION) as client:
        read = await client.read_resource(WEATHER_CARD_URI)
        html = read.contents[0].text  # type: ignore[union-attr]
        first = await client.call_tool("getWeather", {"location": XSS_NAME})

        browser.get("about:blank")
        browser.execute_script(HOST_SCRIPT, html)
        wait_for_message(browser, lambda m: m.get("method") == "ui/notifications/initialized", "initialized")
        initialize = next(m for m in host_log(browser) if m.get("method") == "ui/initialize")
        assert initialize["params"]["appInfo"]["name"] == "refserver weather card"

        post_to_view(
            browser, {"method": "ui/notifications/tool-input", "params": {"arguments": {"location": XSS_NAME}}}
        )
        post_to_view(browser, {"method": "ui/notifications/tool-result", "params": first.model_dump(by_alias=True)})
        expected = weather_for(XSS_NAME)
        view_text(browser, "location", f"Weather in {XSS_NAME}")  # shown as text, never parsed
        view_text(browser, "temperature", f"{expected['temperature']:.1f} °C")
        view_text(browser, "conditions", expected["conditions"])
        browser.switch_to.frame("view")
        try:
            assert browser.find_elements("tag name", "img") == []
            browser.find_element("id", "place").send_keys("Oslo")
            browser.find_element("css selector", "button[type=submit]").click()
        finally:
            browser.switch_to.default_content()

        # The view asks the host to call the tool; the host proxies it to the real server.
        asked = wait_for_message(browser, lambda m: m.get("method") == "tools/call", "tools/call")
        assert asked["params"] == {"name": "getWeather", "arguments": {"location": "Oslo"}}
        answered = await client.call_tool("getWeather", asked["params"]["arguments"])
        post_to_view(browser, {"id": asked["id"], "result": answered.model_dump(by_alias=True)})
        oslo = weather_for("Oslo")
        view_text(browser, "location", "Weather in Oslo")
        view_text(browser, "humidity", f"{oslo['humidity']} %")
        sizes = [m for m in host_log(browser) if m.get("method") == "ui/notifications/size-changed"]
        assert sizes and all(m["params"]["width"] > 0 and m["params"]["height"] > 0 for m in sizes)
