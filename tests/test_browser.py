"""The OAuth pages and the splash page in a real browser: headless Chromium driven through Selenium.

Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them). The browser opens the authorization
URL, clicks through the consent page and the mock identity provider, and lands on a callback served by this
test; the code is exchanged and a tool is called with the token, for a registered client and for one known only
by the URL of its metadata document. A browser-based client in the style of the MCP Inspector's web UI does the
same from its own origin with fetch(), so CORS on the metadata, registration, token and MCP endpoints is checked
by the browser itself. Client-chosen text must come out escaped, and the splash page shows (and then drops) the
degraded banner when an external authorization server goes away and comes back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import trio

from tests.auth_servers import auth_server, free_ports, mcp_server, running
from tests.conftest import INIT_PARAMS, POST_HEADERS, ServerProcess, free_port, server_env, wait_until
from tests.local_http import LocalHttpServer, QuietHandler
from tests.test_oauth_cimd import DocumentServer

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra: pip install -e '.[test]'")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1100,1000",
)
PAGE_TIMEOUT = 15.0
"""Seconds the browser gets to reach a page (each is a local round trip or two)."""
DEGRADE_TIMEOUT = 20.0
"""Seconds a jwt-mode server gets to notice its authorization server is gone (it probes every 5 s)."""
XSS_NAME = "<img src=x onerror=alert(1)>"
PRIMARY_BLUE = "rgba(31, 95, 214, 1)"
"""The Approve button's background (#1f5fd6): the page's stylesheet was applied."""


# --- the browser ---------------------------------------------------------------------------------------


def start_chromium(profile: Path, *extra_flags: str) -> WebDriver:
    """Headless Chromium with a profile of its own (skips, or fails under CI, when it is not installed)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, *extra_flags):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    driver.set_script_timeout(PAGE_TIMEOUT)
    return driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[Any], Any], what: str) -> Any:
    return WebDriverWait(driver, PAGE_TIMEOUT).until(condition, f"timed out waiting for {what} at {driver.current_url}")


def console_log(driver: WebDriver) -> list[dict[str, Any]]:
    """The browser console's entries since the last call (and empties it)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def console_errors(driver: WebDriver) -> list[str]:
    """Console errors since the last call (CSP violations, failed loads), the favicon's 404 aside."""
    return [
        entry["message"]
        for entry in console_log(driver)
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]


def assert_no_alert(driver: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.dismiss()


# --- a client's redirect URI: a tiny local web server --------------------------------------------------


class Callback(LocalHttpServer):
    """A loopback web server standing for the client: `/callback` records the authorization response."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.arrived = threading.Event()
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/callback":
                    owner.received.append({k: v[0] for k, v in parse_qs(parts.query).items()})
                    owner.arrived.set()
                    body = b"<!doctype html><title>Signed in</title><h1>Back at the client</h1>"
                else:
                    body = b"<!doctype html><title>Client</title><h1>A browser-based MCP client</h1>"
                self.answer(200, body, "text/html; charset=utf-8")

        super().__init__(Handler)

    @property
    def redirect_uri(self) -> str:
        return f"{self.origin}/callback"

    def last(self) -> dict[str, str]:
        assert self.arrived.wait(PAGE_TIMEOUT), "the browser never reached the callback"
        return self.received[-1]


@pytest.fixture
def callback() -> Iterator[Callback]:
    with Callback() as server:
        yield server


# --- the server and the OAuth requests -----------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    # Loopback metadata documents are allowed so one test can serve its client's document from this machine; no
    # test here relies on them being refused (tests/test_oauth_cimd.py checks the refusal).
    server = ServerProcess(
        port,
        server_env(auth_mode="embedded", base_url=f"http://127.0.0.1:{port}", oauth_cimd_allow_loopback="on"),
        tmp_path_factory.mktemp("browser") / "server.log",
    )
    server.start()
    yield server
    server.stop()


def register(server: ServerProcess, name: str, redirect_uri: str) -> str:
    response = httpx.post(
        f"{server.url}/register",
        json={
            "client_name": name,
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        },
        timeout=10.0,
    )
    assert response.status_code == 201, response.text
    client_id: str = response.json()["client_id"]
    return client_id


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(server: ServerProcess, client_id: str, redirect_uri: str, challenge: str, state: str) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "scope": "mcp offline_access",
        "resource": server.mcp_url,
    }
    return f"{server.url}/authorize?{urlencode(query)}"


def exchange(server: ServerProcess, client_id: str, redirect_uri: str, code: str, verifier: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": server.mcp_url,
        },
        timeout=10.0,
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def call_echo(server: ServerProcess, token: str, message: str) -> str:
    with httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {token}"}) as http:
        opened = http.post(
            server.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS},
            headers=POST_HEADERS,
        )
        assert opened.status_code == 200, opened.text
        session = {
            **POST_HEADERS,
            "Mcp-Session-Id": opened.headers["mcp-session-id"],
            "MCP-Protocol-Version": "2025-11-25",
        }
        assert (
            http.post(
                server.mcp_url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
            ).status_code
            == 202
        )
        called = http.post(
            server.mcp_url,
            json={
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": message}},
            },
            headers=session,
        )
        assert called.status_code == 200, called.text
        text: str = called.json()["result"]["content"][0]["text"]
        return text


def subject(access_token: str) -> str:
    payload = access_token.split(".")[1]
    sub: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    return sub


# --- the flow, clicked through ----------------------------------------------------------------------------


def open_consent(browser: WebDriver, url: str) -> None:
    browser.get(url)
    wait_for(browser, expected_conditions.title_contains("Authorize application"), "the consent page")


def approve(browser: WebDriver) -> None:
    browser.find_element(By.CSS_SELECTOR, "button[name=decision][value=approve]").click()
    wait_for(browser, expected_conditions.title_contains("Sign in"), "the identity provider's page")


@pytest.mark.parametrize("how", ["pick bob", "type a user id"])
def test_authorization_code_flow_clicked_through_in_chromium(
    browser: WebDriver, embedded: ServerProcess, callback: Callback, tmp_path: Path, how: str
) -> None:
    client_id = register(embedded, "Browser Test App", callback.redirect_uri)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    console_log(browser)  # start with an empty console

    open_consent(browser, authorize_url(embedded, client_id, callback.redirect_uri, challenge, state))
    heading = browser.find_element(By.TAG_NAME, "h1")
    assert heading.text == "Allow Browser Test App to use this MCP server?"
    page = browser.find_element(By.TAG_NAME, "main").text
    assert embedded.mcp_url in page  # the resource
    assert "127.0.0.1" in page  # where it sends the person back
    assert "mcp — Use this MCP server's tools" in page and "offline_access — Stay connected" in page
    approve_button = browser.find_element(By.CSS_SELECTOR, "button[value=approve]")
    assert approve_button.is_displayed() and approve_button.text == "Approve"
    assert approve_button.value_of_css_property("background-color") == PRIMARY_BLUE
    assert browser.find_element(By.CSS_SELECTOR, "button[value=deny]").is_displayed()
    browser.save_screenshot(str(tmp_path / "consent.png"))

    approve(browser)
    assert "Browser Test App" in browser.find_element(By.TAG_NAME, "main").text
    users = [b.get_attribute("value") for b in browser.find_elements(By.CSS_SELECTOR, "button[name=userId]")]
    assert users == ["alice", "bob", "carol"]
    browser.save_screenshot(str(tmp_path / "identity-provider.png"))
    if how == "pick bob":
        user = "bob"
        browser.find_element(By.CSS_SELECTOR, "button[name=userId][value=bob]").click()
    else:
        user = "dave.smith@example.org"
        browser.find_element(By.ID, "userId").send_keys(user)
        browser.find_element(By.CSS_SELECTOR, "input#userId ~ button[type=submit]").click()

    wait_for(browser, expected_conditions.url_contains(callback.redirect_uri), "the client's callback")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Back at the client"
    answer = callback.last()
    assert answer["state"] == state
    assert answer["iss"] == embedded.url  # RFC 9207
    assert "error" not in answer
    assert console_errors(browser) == []  # no CSP violation, no failed load on the way

    tokens = exchange(embedded, client_id, callback.redirect_uri, answer["code"], verifier)
    assert subject(tokens["access_token"]) == user
    assert (
        call_echo(embedded, tokens["access_token"], f"clicked through as {user}") == f"Echo: clicked through as {user}"
    )


def test_a_client_signs_in_with_its_metadata_document_in_chromium(
    browser: WebDriver, embedded: ServerProcess, callback: Callback, tmp_path: Path
) -> None:
    """No registration: the client id is the URL of the client's metadata document, which the server fetches."""
    with DocumentServer() as documents:
        client_id = documents.publish(
            "/metadata-document-app.json",
            client_name="Metadata Document App",
            redirect_uris=[callback.redirect_uri],
            cache_control="max-age=60",
        )
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        console_log(browser)  # start with an empty console

        open_consent(browser, authorize_url(embedded, client_id, callback.redirect_uri, challenge, state))
        assert browser.find_element(By.TAG_NAME, "h1").text == "Allow Metadata Document App to use this MCP server?"
        publisher = browser.find_element(By.XPATH, "//dt[.='Application published by']/following-sibling::dd[1]")
        assert publisher.text == urlsplit(documents.base_url).netloc  # 127.0.0.1:<the document server's port>
        browser.save_screenshot(str(tmp_path / "consent-metadata-document.png"))

        approve(browser)
        assert "Metadata Document App" in browser.find_element(By.TAG_NAME, "main").text
        browser.find_element(By.CSS_SELECTOR, "button[name=userId][value=alice]").click()
        wait_for(browser, expected_conditions.url_contains(callback.redirect_uri), "the client's callback")
        answer = callback.last()
        assert answer["state"] == state and answer["iss"] == embedded.url and answer["code"]
        assert console_errors(browser) == []

        tokens = exchange(embedded, client_id, callback.redirect_uri, answer["code"], verifier)  # no secret
        assert subject(tokens["access_token"]) == "alice"
        assert call_echo(embedded, tokens["access_token"], "signed in by URL") == "Echo: signed in by URL"
        # max-age=60: the consent page, the approval, the identity provider's return and the token exchange all
        # took the cached document.
        assert documents.count("/metadata-document-app.json") == 1


def test_deny_sends_the_browser_back_with_access_denied(
    browser: WebDriver, embedded: ServerProcess, callback: Callback
) -> None:
    client_id = register(embedded, "Denied App", callback.redirect_uri)
    _, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    open_consent(browser, authorize_url(embedded, client_id, callback.redirect_uri, challenge, state))
    browser.find_element(By.CSS_SELECTOR, "button[name=decision][value=deny]").click()
    wait_for(browser, expected_conditions.url_contains(callback.redirect_uri), "the client's callback")
    answer = callback.last()
    assert answer["error"] == "access_denied"
    assert answer["state"] == state and answer["iss"] == embedded.url
    assert "code" not in answer


def test_client_chosen_text_is_shown_escaped_never_run(
    browser: WebDriver, embedded: ServerProcess, callback: Callback
) -> None:
    client_id = register(embedded, XSS_NAME, callback.redirect_uri)
    _, challenge = pkce_pair()
    open_consent(browser, authorize_url(embedded, client_id, callback.redirect_uri, challenge, "s"))
    for page in ("consent", "identity provider"):
        assert browser.find_elements(By.TAG_NAME, "img") == [], page  # no element was created from the name
        assert browser.find_elements(By.CSS_SELECTOR, "[onerror]") == [], page
        assert XSS_NAME in browser.find_element(By.TAG_NAME, "main").text, page  # shown as the text it is
        assert "&lt;img src=x onerror=alert(1)&gt;" in browser.page_source, page
        assert_no_alert(browser)
        if page == "consent":
            approve(browser)


def test_a_browser_based_client_does_the_flow_with_fetch_from_its_own_origin(
    browser: WebDriver, embedded: ServerProcess, callback: Callback
) -> None:
    """What the MCP Inspector's web UI does: discovery, registration, token exchange and MCP calls with fetch()
    from another origin, so each answer must carry CORS headers the browser accepts."""
    browser.get(f"{callback.origin}/")
    discovered = browser.execute_async_script(
        """
        const [mcpUrl, redirectUri, done] = arguments;
        (async () => {
          const challenge = await fetch(mcpUrl, {method: "POST", headers: {"Content-Type": "application/json",
              "Accept": "application/json, text/event-stream"}, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}'});
          const wwwAuthenticate = challenge.headers.get("WWW-Authenticate");
          const metadataUrl = /resource_metadata="([^"]+)"/.exec(wwwAuthenticate)[1];
          const resource = await (await fetch(metadataUrl)).json();
          const issuer = resource.authorization_servers[0];
          const as = await (await fetch(issuer + "/.well-known/oauth-authorization-server",
                                        {headers: {"MCP-Protocol-Version": "2025-11-25"}})).json();
          const registered = await fetch(as.registration_endpoint, {method: "POST",
              headers: {"Content-Type": "application/json"},
              body: JSON.stringify({client_name: "Inspector-style web client", redirect_uris: [redirectUri],
                                    token_endpoint_auth_method: "none"})});
          return {status: challenge.status, wwwAuthenticate, resource: resource.resource, as,
                  registration: registered.status, client: await registered.json()};
        })().then(done, (error) => done({error: String(error)}));
        """,
        embedded.mcp_url,
        callback.redirect_uri,
    )
    assert "error" not in discovered, discovered
    assert discovered["status"] == 401 and discovered["wwwAuthenticate"].startswith("Bearer ")
    assert discovered["resource"] == embedded.mcp_url
    assert discovered["registration"] == 201
    client_id = discovered["client"]["client_id"]

    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    open_consent(browser, authorize_url(embedded, client_id, callback.redirect_uri, challenge, state))
    approve(browser)
    browser.find_element(By.CSS_SELECTOR, "button[name=userId][value=carol]").click()
    wait_for(browser, expected_conditions.url_contains(callback.redirect_uri), "the client's callback")
    answer = callback.last()
    assert answer["state"] == state

    # Back on the client's own page: the token exchange and the MCP session, all with fetch().
    result = browser.execute_async_script(
        """
        const [tokenEndpoint, mcpUrl, form, init, done] = arguments;
        (async () => {
          const tokenResponse = await fetch(tokenEndpoint, {method: "POST", body: new URLSearchParams(form)});
          const tokens = await tokenResponse.json();
          const headers = {"Authorization": "Bearer " + tokens.access_token, "Content-Type": "application/json",
                           "Accept": "application/json, text/event-stream"};
          const opened = await fetch(mcpUrl, {method: "POST", headers,
              body: JSON.stringify({jsonrpc: "2.0", id: 1, method: "initialize", params: init})});
          const sessionId = opened.headers.get("Mcp-Session-Id");
          const session = {...headers, "Mcp-Session-Id": sessionId, "MCP-Protocol-Version": "2025-11-25"};
          const initialized = await fetch(mcpUrl, {method: "POST", headers: session,
              body: JSON.stringify({jsonrpc: "2.0", method: "notifications/initialized"})});
          const called = await fetch(mcpUrl, {method: "POST", headers: session, body: JSON.stringify({jsonrpc: "2.0",
              id: 2, method: "tools/call", params: {name: "echo", arguments: {message: "from a web page"}}})});
          const closed = await fetch(mcpUrl, {method: "DELETE", headers: session});
          return {token: tokenResponse.status, scope: tokens.scope, opened: opened.status, sessionId,
                  initialized: initialized.status, echo: (await called.json()).result.content[0].text,
                  closed: closed.status};
        })().then(done, (error) => done({error: String(error)}));
        """,
        discovered["as"]["token_endpoint"],
        embedded.mcp_url,
        {
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": callback.redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": embedded.mcp_url,
        },
        INIT_PARAMS,
    )
    assert "error" not in result, result
    assert result["token"] == 200 and "mcp" in result["scope"].split()
    assert result["opened"] == 200 and result["sessionId"]  # Mcp-Session-Id is exposed to scripts
    assert result["initialized"] == 202
    assert result["echo"] == "Echo: from a web page"
    assert result["closed"] in (200, 204)


def test_protected_resource_metadata_accepts_the_sdk_discovery_header_cross_origin(
    browser: WebDriver, embedded: ServerProcess, callback: Callback
) -> None:
    browser.get(f"{callback.origin}/")
    outcome = browser.execute_async_script(
        """
        const [url, done] = arguments;
        fetch(url, {headers: {"MCP-Protocol-Version": "2025-11-25"}})
          .then((response) => done("HTTP " + response.status), (error) => done("refused: " + error));
        """,
        f"{embedded.url}/.well-known/oauth-protected-resource/mcp",
    )
    assert outcome == "HTTP 200"


# --- the splash page -----------------------------------------------------------------------------------------


def test_splash_page(browser: WebDriver, embedded: ServerProcess, tmp_path: Path) -> None:
    browser.get(f"{embedded.url}/")
    wait_for(browser, expected_conditions.title_contains("refserver"), "the splash page")
    assert browser.find_element(By.TAG_NAME, "h1").text == "refserver"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert embedded.mcp_url in body
    assert f"{embedded.url}/sse" in body
    assert "Authentication: OAuth 2.1 with PKCE (embedded)" in body
    assert "echo" in body and "longRunningOperation" in body
    assert browser.find_elements(By.CSS_SELECTOR, ".warning") == []
    browser.save_screenshot(str(tmp_path / "splash.png"))


def wait_for_health(server: ServerProcess, auth_state: str) -> None:
    async def reported() -> bool:
        async with httpx.AsyncClient(timeout=5.0) as http:
            document = (await http.get(f"{server.url}/health")).json()
        return bool(document["auth"]["state"] == auth_state)

    # These tests are synchronous (Selenium): the one waiter of the tests runs in a Trio loop of its own.
    trio.run(wait_until, reported, DEGRADE_TIMEOUT, f"{server.url}/health to report auth state {auth_state!r}")


def test_splash_page_degraded_banner_comes_and_goes_with_the_authorization_server(
    browser: WebDriver, tmp_path: Path
) -> None:
    as_port, mcp_port = free_ports(2)
    auth = auth_server(tmp_path, port=as_port, resources=[f"http://127.0.0.1:{mcp_port}/mcp"])
    mcp = mcp_server(tmp_path, port=mcp_port, auth_mode="jwt", auth_server_url=auth.url)
    with running(auth), running(mcp):
        browser.get(f"{mcp.url}/")
        wait_for(browser, expected_conditions.title_contains("refserver"), "the splash page")
        assert browser.find_elements(By.CSS_SELECTOR, ".warning") == []
        assert "(jwt)" in browser.find_element(By.TAG_NAME, "body").text

        auth.kill()
        wait_for_health(mcp, "degraded")
        browser.refresh()
        banner = wait_for(
            browser, expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "[role=alert]")), "the banner"
        )
        assert banner.text.startswith("Degraded: the authorization server at")
        assert auth.url in banner.text and "cannot be reached" in banner.text
        assert banner.value_of_css_property("background-color") == "rgba(253, 236, 234, 1)"  # #fdecea
        browser.save_screenshot(str(tmp_path / "splash-degraded.png"))

        auth.start()  # the same port
        wait_for_health(mcp, "ok")
        browser.refresh()
        wait_for(browser, expected_conditions.title_contains("refserver"), "the splash page")
        assert browser.find_elements(By.CSS_SELECTOR, ".warning") == []
