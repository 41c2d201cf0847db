"""Client ID Metadata Documents: a client whose id is the URL of its metadata, signing in end to end, and the
SSRF guard in front of the fetch (refserver/oauth/client_documents.py).

The documents are served by a real HTTP server this test starts; every request it gets is counted, so "refused
before any connection" is seen, not assumed.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from refserver.backend.memory_kv import MemoryKeyValueStore
from refserver.oauth.client_documents import (
    MAX_DOCUMENT_BYTES,
    ClientDocumentError,
    ClientDocuments,
    address_allowed,
    cache_seconds,
    check_document_url,
)
from refserver.oauth.crypto import s256_challenge
from refserver.oauth.headless import act_as_person
from tests.conftest import ServerProcess, free_port, modern_request, server_env
from tests.local_http import LocalHttpServer, QuietHandler

SCOPES = ("mcp", "offline_access")
SLOW_SECONDS = 8.0


class DocumentServer(LocalHttpServer):
    """Serves metadata documents for the client ids under its base URL, and counts every request.

    The fixed paths below each play one part (a redirect, a huge or slow answer, another client's id); `publish`
    adds a document of the caller's own at a path of its own."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.big_bytes_sent = 0
        self.published: dict[str, tuple[dict[str, Any], str | None]] = {}
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                url = f"{owner.base_url}{self.path}"
                if self.path == "/redirect.json":
                    self.send_response(302)
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                    self.end_headers()
                    return
                if self.path == "/big.json":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(10 * 1024 * 1024))
                    self.end_headers()
                    try:
                        for _ in range(10 * 1024):
                            self.wfile.write(b" " * 1024)
                            owner.big_bytes_sent += 1024
                    except OSError:
                        pass  # the reader stopped early, as it should
                    return
                if self.path == "/slow.json":
                    time.sleep(SLOW_SECONDS)
                if self.path in owner.published:
                    document, cache = owner.published[self.path]
                else:
                    document = {
                        "client_id": url if self.path != "/mismatch.json" else "https://elsewhere.example/client.json",
                        "client_name": "CIMD <b>test</b> client",
                        "redirect_uris": ["http://127.0.0.1:5173/callback"],
                        "token_endpoint_auth_method": "none",
                        "grant_types": ["authorization_code", "refresh_token"],
                    }
                    cache = {"/client.json": "max-age=60", "/nostore.json": "no-store"}.get(self.path)
                self.answer_json(200, document, {"Cache-Control": cache} if cache else None)

        super().__init__(Handler)
        self.base_url = self.origin

    def count(self, path: str) -> int:
        return self.requests.count(path)

    def publish(self, path: str, *, client_name: str, redirect_uris: list[str], cache_control: str | None) -> str:
        """Serves, at `path`, a public client's document whose client_id is its own URL; returns that URL."""
        url = f"{self.base_url}{path}"
        document = {
            "client_id": url,
            "client_name": client_name,
            "redirect_uris": redirect_uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        }
        self.published[path] = (document, cache_control)
        return url


@pytest.fixture(scope="module")
def documents() -> Iterator[DocumentServer]:
    with DocumentServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    process = ServerProcess(
        port,
        server_env(base_url=f"http://127.0.0.1:{port}", auth_mode="embedded", oauth_cimd_allow_loopback="on"),
        tmp_path_factory.mktemp("cimd") / "server.log",
    )
    process.start()
    yield process
    process.stop()


async def test_a_client_signs_in_with_its_metadata_document_url(
    server: ServerProcess, documents: DocumentServer
) -> None:
    client_id = f"{documents.base_url}/client.json"
    redirect_uri = "http://127.0.0.1:5173/callback"
    verifier = secrets.token_urlsafe(48)
    async with httpx.AsyncClient(timeout=10.0) as http:
        metadata = (await http.get(f"{server.url}/.well-known/oauth-authorization-server")).json()
        assert metadata["client_id_metadata_document_supported"] is True
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
            "state": "s1",
            "resource": server.mcp_url,
        }
        consent = await http.get(f"{server.url}/authorize?{urlencode(query)}")
        assert consent.status_code == 200, consent.text
        # The document's name, escaped, and the host that published it.
        assert "CIMD &lt;b&gt;test&lt;/b&gt; client" in consent.text and "<b>test</b>" not in consent.text
        publisher = urlsplit(documents.base_url).netloc
        assert f"Application published by</dt><dd><code>{publisher}</code>" in consent.text
        final = await act_as_person(http, f"{server.url}/authorize?{urlencode(query)}", user="carol")
        answer = {key: values[0] for key, values in parse_qs(urlsplit(final).query).items()}
        assert final.startswith(redirect_uri) and answer["state"] == "s1"
        tokens = await http.post(
            f"{server.url}/token",
            data={
                "grant_type": "authorization_code",
                "code": answer["code"],
                "code_verifier": verifier,
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "resource": server.mcp_url,
            },
        )
        assert tokens.status_code == 200, tokens.text
        body, headers = modern_request("server/discover")
        access = tokens.json()["access_token"]
        ping = await http.post(server.mcp_url, json=body, headers={**headers, "Authorization": f"Bearer {access}"})
        assert ping.status_code == 200, ping.text
        # max-age=60: three /authorize views and a /token, one fetch.
        assert documents.count("/client.json") == 1

        # A redirect URI the document does not list is refused on our own page, never redirected to.
        wrong = await http.get(
            f"{server.url}/authorize?{urlencode({**query, 'redirect_uri': 'http://127.0.0.1:6000/x'})}"
        )
        assert wrong.status_code == 400 and "Location" not in wrong.headers
        # A document whose client_id is another URL is refused the same way.
        mismatch = await http.get(
            f"{server.url}/authorize?{urlencode({**query, 'client_id': f'{documents.base_url}/mismatch.json'})}"
        )
        assert mismatch.status_code == 400 and "client_id" in mismatch.text


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:a00:1::",
        "64:ff9b::a00:1",
        "2001:db8::1",
        "255.255.255.255",
        "198.18.0.1",
    ],
)
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), allow_loopback=False)


def test_public_addresses_pass_and_loopback_only_when_allowed() -> None:
    for public in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "1.1.1.1"):
        assert address_allowed(ipaddress.ip_address(public), allow_loopback=False)
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), allow_loopback=True)
    assert not address_allowed(ipaddress.ip_address("10.0.0.1"), allow_loopback=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://client.example/c.json", "https"),
        ("https://client.example", "path"),
        ("https://client.example/", "path"),
        ("https://user:pw@client.example/c.json", "user"),
        ("https://client.example/c.json#frag", "fragment"),
        ("https://client.example/a/../c.json", "dot"),
    ],
)
def test_client_id_urls_follow_the_drafts_rules(url: str, reason: str) -> None:
    with pytest.raises(ClientDocumentError, match=reason):
        check_document_url(url, allow_loopback=False)


def test_cache_control_is_honoured_within_a_bound() -> None:
    assert cache_seconds("max-age=60") == 60
    assert cache_seconds("public, max-age=999999999") == 24 * 3600
    assert cache_seconds("no-store") == 0 and cache_seconds("no-cache, max-age=60") == 0
    assert cache_seconds("max-age=soon") == 0
    assert cache_seconds(None) == 300


class RecordingResolver:
    def __init__(self, answer: list[str]) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answer


def fetcher(resolver: Any = None, allow_loopback: bool = False) -> ClientDocuments:
    kwargs = {"resolver": resolver} if resolver is not None else {}
    return ClientDocuments(kv=MemoryKeyValueStore(), scopes_supported=SCOPES, allow_loopback=allow_loopback, **kwargs)


@pytest.mark.parametrize("resolved", [["10.1.2.3"], ["169.254.169.254"], ["::1"], ["93.184.216.34", "10.0.0.7"]])
async def test_a_host_resolving_to_a_forbidden_address_is_refused_before_any_connection(resolved: list[str]) -> None:
    resolver = RecordingResolver(resolved)
    documents = fetcher(resolver)
    with pytest.raises(ClientDocumentError, match="address we do not fetch from"):
        await documents.client("https://client.example/c.json")
    assert resolver.asked == ["client.example"] and documents.fetches == 0


@pytest.mark.parametrize("url", ["https://10.0.0.1/c.json", "https://169.254.169.254/c.json", "https://[::1]/c.json"])
async def test_a_literal_forbidden_address_is_refused_before_any_connection(url: str) -> None:
    documents = fetcher(RecordingResolver(["93.184.216.34"]))
    with pytest.raises(ClientDocumentError, match="address we do not fetch from"):
        await documents.client(url)
    assert documents.fetches == 0


async def test_loopback_documents_are_refused_unless_allowed(documents: DocumentServer) -> None:
    before = len(documents.requests)
    with pytest.raises(ClientDocumentError):
        await fetcher().client(f"{documents.base_url}/client.json")
    assert len(documents.requests) == before  # not even a connection


async def test_a_redirect_is_not_followed(documents: DocumentServer) -> None:
    with pytest.raises(ClientDocumentError, match="redirects"):
        await fetcher(allow_loopback=True).client(f"{documents.base_url}/redirect.json")
    assert documents.count("/redirect.json") == 1


async def test_a_huge_document_is_refused_and_reading_stops_early(documents: DocumentServer) -> None:
    with pytest.raises(ClientDocumentError, match="larger than"):
        await fetcher(allow_loopback=True).client(f"{documents.base_url}/big.json")
    assert documents.big_bytes_sent < 10 * 1024 * 1024  # the server could not send it all
    assert MAX_DOCUMENT_BYTES < 10 * 1024 * 1024


async def test_a_slow_server_times_out(documents: DocumentServer) -> None:
    started = time.monotonic()
    with pytest.raises(ClientDocumentError, match="did not arrive"):
        await fetcher(allow_loopback=True).client(f"{documents.base_url}/slow.json")
    assert time.monotonic() - started < SLOW_SECONDS


async def test_a_document_for_another_client_id_is_refused(documents: DocumentServer) -> None:
    with pytest.raises(ClientDocumentError, match="client_id"):
        await fetcher(allow_loopback=True).client(f"{documents.base_url}/mismatch.json")


async def test_no_store_documents_are_fetched_every_time(documents: DocumentServer) -> None:
    reader = fetcher(allow_loopback=True)
    for _ in range(2):
        client = await reader.client(f"{documents.base_url}/nostore.json")
        assert client.is_public and client.application_type == "native"
    assert documents.count("/nostore.json") == 2


async def test_dcr_application_type_is_stored_and_enforced(server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:

        async def register(**body: Any) -> httpx.Response:
            return await http.post(f"{server.url}/register", json={"client_name": "t", **body})

        native = await register(redirect_uris=["http://127.0.0.1:7000/cb"], application_type="native")
        assert native.status_code == 201 and native.json()["application_type"] == "native"
        web = await register(redirect_uris=["https://app.example/cb"], application_type="web")
        assert web.status_code == 201 and web.json()["application_type"] == "web"
        inferred = await register(redirect_uris=["http://localhost:7000/cb"])
        assert inferred.json()["application_type"] == "native"
        for body in (
            {"redirect_uris": ["http://127.0.0.1:7000/cb"], "application_type": "web"},
            {"redirect_uris": ["https://app.example/cb"], "application_type": "native"},
            {"redirect_uris": ["https://app.example/cb"], "application_type": "desktop"},
        ):
            refused = await register(**body)
            assert refused.status_code == 400, body
