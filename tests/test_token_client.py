"""The token client (`refserver.oauth.headless`, `refserver.oauth.token_client_discovery`) against servers that
are not ours: discovery in the spec's order, the RFC 9207 `iss` check, scope selection, and the three ways to a
client id; then against our real embedded server through the CLI.

`ForeignServer` is a real HTTP server in this process, playing an MCP server's 401 and protected resource
metadata and an authorization server whose issuer has a path (`/tenant1`), whose metadata is at one location
only, whose /authorize redirects straight back (no consent page) and whose token endpoint checks PKCE S256. It
records every request, so the order of discovery is seen, not assumed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import attrs
import httpx
import pytest
import trio

from refserver.oauth.crypto import s256_challenge
from refserver.oauth.headless import (
    LOOPBACK_REDIRECT,
    ClientCredentials,
    FlowError,
    IssuerCredentials,
    obtain_tokens,
)
from refserver.oauth.token_client_discovery import Challenge, metadata_urls, parse_challenge
from tests.conftest import ROOT, ServerProcess
from tests.local_http import LocalHttpServer, QuietHandler
from tests.test_oauth_cimd import DocumentServer

FLOW_TIMEOUT = 30.0
CHALLENGE_METADATA_PATH = "/custom/resource-metadata"
"""Where the 401 challenge says the protected resource metadata is: a place no well-known rule would find."""


@attrs.define
class Behaviour:
    """How the foreign server behaves; each test changes what it is about."""

    issuer_path: str = "/tenant1"
    metadata_at: str = "oauth-inserted"  # or "oidc-inserted", "oidc-appended"
    challenge_metadata: bool = True
    challenge_scope: str | None = None
    prm_paths: tuple[str, ...] = (CHALLENGE_METADATA_PATH,)
    prm_resource: str | None = None  # default: the MCP URL
    prm_scopes: list[str] | None = None
    metadata_issuer: str | None = None  # default: the issuer
    pkce_methods: list[str] | None = attrs.field(factory=lambda: ["S256"])
    iss_supported: bool = True
    redirect_iss: str | None = None  # default: the issuer; "" leaves iss out
    registration: bool = True
    cimd: bool = False
    token_auth_methods: list[str] | None = None
    pre_registered: dict[str, str | None] = attrs.field(factory=dict)
    unknown_clients: set[str] = attrs.field(factory=set)


class ForeignServer(LocalHttpServer):
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.requests: list[str] = []
        self.authorize_queries: list[dict[str, str]] = []
        self.token_forms: list[dict[str, str]] = []
        self.token_authorization: list[str | None] = []
        self.registered: list[str] = []
        self._codes: dict[str, dict[str, str]] = {}
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner.handle(self, "GET", b"")

            def do_POST(self) -> None:
                owner.handle(self, "POST", self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        super().__init__(Handler)
        self.url = self.origin

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def issuer(self) -> str:
        return f"{self.url}{self.behaviour.issuer_path}"

    def reset(self, **changes: Any) -> None:
        self.behaviour = Behaviour(**changes)
        self.requests.clear()
        self.authorize_queries.clear()
        self.token_forms.clear()
        self.token_authorization.clear()
        self.registered.clear()

    def metadata_path(self) -> str:
        path = self.behaviour.issuer_path
        return {
            "oauth-inserted": f"/.well-known/oauth-authorization-server{path}",
            "oidc-inserted": f"/.well-known/openid-configuration{path}",
            "oidc-appended": f"{path}/.well-known/openid-configuration",
        }[self.behaviour.metadata_at]

    def handle(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        b = self.behaviour
        parts = urlsplit(handler.path)
        path = parts.path
        self.requests.append(f"{method} {path}")
        tenant = b.issuer_path
        if path == "/mcp":
            params = []
            if b.challenge_metadata:
                params.append(f'resource_metadata="{self.url}{CHALLENGE_METADATA_PATH}"')
            if b.challenge_scope:
                params.append(f'scope="{b.challenge_scope}"')
            header = "Bearer " + ", ".join(params) if params else "Bearer"
            return self._json(handler, 401, {"error": "unauthorized"}, {"WWW-Authenticate": header})
        if method == "GET" and path in b.prm_paths:
            document: dict[str, Any] = {
                "resource": b.prm_resource or self.mcp_url,
                "authorization_servers": [self.issuer],
            }
            if b.prm_scopes is not None:
                document["scopes_supported"] = b.prm_scopes
            return self._json(handler, 200, document)
        if method == "GET" and path == self.metadata_path():
            metadata: dict[str, Any] = {
                "issuer": b.metadata_issuer or self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "response_types_supported": ["code"],
                "authorization_response_iss_parameter_supported": b.iss_supported,
                "client_id_metadata_document_supported": b.cimd,
            }
            if b.pkce_methods is not None:
                metadata["code_challenge_methods_supported"] = b.pkce_methods
            if b.registration:
                metadata["registration_endpoint"] = f"{self.issuer}/register"
            if b.token_auth_methods is not None:
                metadata["token_endpoint_auth_methods_supported"] = b.token_auth_methods
            return self._json(handler, 200, metadata)
        if method == "POST" and path == f"{tenant}/register" and b.registration:
            client_id = f"dcr-{secrets.token_hex(4)}"
            self.registered.append(client_id)
            return self._json(handler, 201, {"client_id": client_id, **json.loads(body)})
        if method == "GET" and path == f"{tenant}/authorize":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            self.authorize_queries.append(query)
            if query.get("client_id") in b.unknown_clients:
                return self._json(handler, 400, {"error": "invalid_client"})
            code = secrets.token_urlsafe(8)
            self._codes[code] = query
            answer = {"code": code, "state": query["state"]}
            iss = self.issuer if b.redirect_iss is None else b.redirect_iss
            if iss:
                answer["iss"] = iss
            handler.send_response(302)
            handler.send_header("Location", f"{query['redirect_uri']}?{urlencode(answer)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        if method == "POST" and path == f"{tenant}/token":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            self.token_forms.append(form)
            self.token_authorization.append(handler.headers.get("Authorization"))
            granted = self._codes.pop(form.get("code", ""), None)
            if (
                granted is None
                or s256_challenge(form.get("code_verifier", "")) != granted["code_challenge"]
                or form.get("redirect_uri") != granted["redirect_uri"]
                or form.get("resource") != granted["resource"]
                or not self._client_authenticated(granted["client_id"], form, handler.headers.get("Authorization"))
            ):
                return self._json(handler, 400, {"error": "invalid_grant"})
            return self._json(
                handler, 200, {"access_token": "foreign-token", "token_type": "Bearer", "scope": granted.get("scope")}
            )
        return self._json(handler, 404, {"error": "not_found"})

    def _client_authenticated(self, client_id: str, form: dict[str, str], authorization: str | None) -> bool:
        secret = self.behaviour.pre_registered.get(client_id)
        if secret is None:
            return form.get("client_id") == client_id and authorization is None
        if authorization is not None:
            # RFC 6749 sec. 2.3.1: each part is form-encoded before the two are joined and base64-encoded.
            scheme, _, encoded = authorization.partition(" ")
            name, _, password = base64.b64decode(encoded).decode().partition(":")
            sent = (scheme, unquote_plus(name), unquote_plus(password))
            return sent == ("Basic", client_id, secret) and "client_secret" not in form
        return form.get("client_id") == client_id and form.get("client_secret") == secret

    @staticmethod
    def _json(
        handler: BaseHTTPRequestHandler, status: int, document: Any, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(document).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[[], ForeignServer]]:
    started: list[ForeignServer] = []

    def start() -> ForeignServer:
        server = ForeignServer()
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def foreign(serve: Callable[[], ForeignServer]) -> ForeignServer:
    return serve()


async def flow(server: ForeignServer, **options: Any) -> dict[str, Any]:
    with trio.fail_after(FLOW_TIMEOUT):
        async with httpx.AsyncClient(timeout=10.0) as http:
            return await obtain_tokens(http, server.mcp_url, user="alice", **options)


async def refused(server: ForeignServer, **options: Any) -> str:
    with pytest.raises(FlowError) as caught:
        await flow(server, **options)
    return str(caught.value)


# --- pure parts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        (
            "https://as.example/tenant1",
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant1",
                "https://as.example/.well-known/openid-configuration/tenant1",
                "https://as.example/tenant1/.well-known/openid-configuration",
            ],
        ),
        (
            "https://as.example/tenant1/",
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant1",
                "https://as.example/.well-known/openid-configuration/tenant1",
                "https://as.example/tenant1/.well-known/openid-configuration",
            ],
        ),
        (
            "https://as.example:8443/a/b",
            [
                "https://as.example:8443/.well-known/oauth-authorization-server/a/b",
                "https://as.example:8443/.well-known/openid-configuration/a/b",
                "https://as.example:8443/a/b/.well-known/openid-configuration",
            ],
        ),
        (
            "https://as.example",
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ],
        ),
        (
            "https://as.example/",
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ],
        ),
    ],
)
def test_metadata_urls_follow_the_specs_priority_order(issuer: str, expected: list[str]) -> None:
    assert metadata_urls(issuer) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Bearer resource_metadata="https://r/.wk", scope="a b"', Challenge("https://r/.wk", "a b")),
        ('bearer scope="mcp", error="invalid_token"', Challenge(None, "mcp")),
        ('DPoP algs="ES256", Bearer resource_metadata="https://r/x"', Challenge("https://r/x", None)),
        ('Bearer realm="x", scope=mcp', Challenge(None, "mcp")),
        ('Basic realm="x"', Challenge()),
        ("Bearer", Challenge()),
    ],
)
def test_the_bearer_challenge_is_read_from_www_authenticate(header: str, expected: Challenge) -> None:
    assert parse_challenge(header) == expected


# --- discovery -----------------------------------------------------------------------------------------


async def test_the_challenges_metadata_url_and_the_path_inserted_rfc8414_location_are_used(
    foreign: ForeignServer,
) -> None:
    foreign.reset(challenge_scope="files:read")
    tokens = await flow(foreign)
    assert tokens["access_token"] == "foreign-token"
    assert foreign.requests == [
        "POST /mcp",
        f"GET {CHALLENGE_METADATA_PATH}",
        "GET /.well-known/oauth-authorization-server/tenant1",
        "POST /tenant1/register",
        "GET /tenant1/authorize",
        "POST /tenant1/token",
    ]
    (query,) = foreign.authorize_queries
    assert query["code_challenge_method"] == "S256"
    assert query["resource"] == foreign.mcp_url
    assert query["scope"] == "files:read"
    assert tokens["client_id"] == foreign.registered[0] == query["client_id"]


async def test_without_a_challenge_url_the_path_aware_then_the_root_resource_metadata_is_tried(
    foreign: ForeignServer,
) -> None:
    foreign.reset(challenge_metadata=False, prm_paths=("/.well-known/oauth-protected-resource",))
    await flow(foreign)
    assert foreign.requests[:4] == [
        "POST /mcp",
        "GET /.well-known/oauth-protected-resource/mcp",
        "GET /.well-known/oauth-protected-resource",
        "GET /.well-known/oauth-authorization-server/tenant1",
    ]


@pytest.mark.parametrize("metadata_at", ["oidc-inserted", "oidc-appended"])
async def test_an_openid_connect_only_authorization_server_is_found(foreign: ForeignServer, metadata_at: str) -> None:
    foreign.reset(issuer_path="/tenant", metadata_at=metadata_at)
    tokens = await flow(foreign)
    assert tokens["access_token"] == "foreign-token"
    tried = [r for r in foreign.requests if "well-known" in r]
    order = [
        "GET /.well-known/oauth-authorization-server/tenant",
        "GET /.well-known/openid-configuration/tenant",
        "GET /tenant/.well-known/openid-configuration",
    ]
    assert tried == order[: order.index(f"GET {foreign.metadata_path()}") + 1]
    assert "POST /tenant/token" in foreign.requests


async def test_metadata_whose_issuer_differs_is_refused(foreign: ForeignServer) -> None:
    foreign.reset(metadata_issuer=f"{foreign.url}/tenant1/")  # a trailing slash is a different issuer
    assert "issuer mismatch" in await refused(foreign)
    assert not any(r.endswith(("/register", "/authorize", "/token")) for r in foreign.requests)


@pytest.mark.parametrize("methods", [None, ["plain"]])
async def test_an_authorization_server_without_s256_is_refused(
    foreign: ForeignServer, methods: list[str] | None
) -> None:
    foreign.reset(pkce_methods=methods)
    assert "S256" in await refused(foreign)
    assert not any(r.endswith(("/register", "/authorize", "/token")) for r in foreign.requests)


async def test_resource_metadata_for_another_resource_is_refused(foreign: ForeignServer) -> None:
    foreign.reset(prm_resource="http://elsewhere.example/mcp")
    assert "names the resource" in await refused(foreign)
    assert not any("oauth-authorization-server" in r for r in foreign.requests)


# --- RFC 9207 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iss_supported", "redirect_iss", "accepted"),
    [
        (True, None, True),
        (True, "wrong", False),
        (True, "", False),
        (False, "wrong", False),
        (False, "", True),
    ],
)
async def test_iss_is_checked_before_the_code_is_redeemed(
    foreign: ForeignServer, iss_supported: bool, redirect_iss: str | None, accepted: bool
) -> None:
    if redirect_iss == "wrong":
        redirect_iss = f"{foreign.url}/TENANT1"  # no normalisation: another string is another issuer
    foreign.reset(iss_supported=iss_supported, redirect_iss=redirect_iss)
    if accepted:
        assert (await flow(foreign))["access_token"] == "foreign-token"
        assert len(foreign.token_forms) == 1
    else:
        assert "RFC 9207" in await refused(foreign)
        assert foreign.token_forms == []
        assert "POST /tenant1/token" not in foreign.requests


# --- scope selection ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("challenge_scope", "prm_scopes", "explicit", "expected"),
    [
        ("files:read", ["a", "b"], None, "files:read"),
        (None, ["a", "b"], None, "a b"),
        (None, None, None, None),
        (None, [], None, None),
        ("files:read", ["a"], "mine other", "mine other"),
    ],
)
async def test_scope_comes_from_the_argument_the_challenge_or_the_resource_metadata(
    foreign: ForeignServer,
    challenge_scope: str | None,
    prm_scopes: list[str] | None,
    explicit: str | None,
    expected: str | None,
) -> None:
    foreign.reset(challenge_scope=challenge_scope, prm_scopes=prm_scopes)
    await flow(foreign, scope=explicit)
    (query,) = foreign.authorize_queries
    assert query.get("scope") == expected
    assert ("scope" in query) == (expected is not None)


# --- client ids ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "methods", "sent_as"),
    [
        (None, None, "none"),
        ("s3cret:/+", None, "basic"),
        ("s3cret", ["client_secret_post"], "post"),
        ("s3cret", ["client_secret_basic", "client_secret_post"], "basic"),
    ],
)
async def test_a_pre_registered_client_makes_no_registration(
    foreign: ForeignServer, secret: str | None, methods: list[str] | None, sent_as: str
) -> None:
    foreign.reset(pre_registered={"pre-1": secret}, token_auth_methods=methods)
    tokens = await flow(foreign, client_id="pre-1", client_secret=secret)
    assert tokens["client_id"] == "pre-1"
    assert "POST /tenant1/register" not in foreign.requests and foreign.registered == []
    (form,), (authorization,) = foreign.token_forms, foreign.token_authorization
    assert (authorization is not None) == (sent_as == "basic")
    assert ("client_secret" in form) == (sent_as == "post")


async def test_a_secret_the_token_endpoint_cannot_take_is_refused(foreign: ForeignServer) -> None:
    foreign.reset(pre_registered={"pre-1": "s"}, token_auth_methods=["private_key_jwt"])
    assert "accepts no client secret" in await refused(foreign, client_id="pre-1", client_secret="s")
    assert foreign.token_forms == []


@pytest.mark.parametrize(
    ("cimd", "registration", "outcome"),
    [(True, True, "document"), (False, True, "registered"), (False, False, "refused")],
)
async def test_a_client_metadata_url_is_the_client_id_where_the_server_supports_it(
    foreign: ForeignServer, cimd: bool, registration: bool, outcome: str
) -> None:
    foreign.reset(cimd=cimd, registration=registration)
    document = "https://client.example/refserver-cli.json"
    if outcome == "refused":
        assert "no registration endpoint" in await refused(foreign, client_metadata_url=document)
        assert foreign.authorize_queries == []
        return
    tokens = await flow(foreign, client_metadata_url=document)
    (query,) = foreign.authorize_queries
    if outcome == "document":
        assert tokens["client_id"] == query["client_id"] == document and foreign.registered == []
    else:
        assert tokens["client_id"] == query["client_id"] == foreign.registered[0]


async def test_a_registration_is_reused_only_with_the_issuer_that_made_it(
    serve: Callable[[], ForeignServer],
) -> None:
    first, second = serve(), serve()
    first.reset()
    second.reset()
    credentials = IssuerCredentials()
    one = await flow(first, credentials=credentials)
    again = await flow(first, credentials=credentials)
    assert one["client_id"] == again["client_id"] and len(first.registered) == 1
    other = await flow(second, credentials=credentials)
    assert len(second.registered) == 1 and other["client_id"] == second.registered[0]
    assert all(q["client_id"] != one["client_id"] for q in second.authorize_queries)
    assert all(f["client_id"] != one["client_id"] for f in second.token_forms)
    assert credentials.get(first.issuer) != credentials.get(second.issuer)


async def test_a_remembered_client_the_server_forgot_is_registered_again(foreign: ForeignServer) -> None:
    foreign.reset(unknown_clients={"forgotten"})  # as an in-memory server that restarted would
    credentials = IssuerCredentials()
    credentials.put(foreign.issuer, ClientCredentials("forgotten"))
    tokens = await flow(foreign, credentials=credentials)
    (fresh,) = foreign.registered
    assert tokens["client_id"] == fresh and credentials.get(foreign.issuer) == ClientCredentials(fresh)
    assert [q["client_id"] for q in foreign.authorize_queries] == ["forgotten", fresh]


# --- the command line -------------------------------------------------------------------------------------


async def token_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60.0):
        return await trio.run_process(
            [sys.executable, "-m", "refserver", "token", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )


async def test_the_cli_keeps_registrations_in_a_private_credentials_file(
    foreign: ForeignServer, tmp_path: Path
) -> None:
    foreign.reset()
    path = tmp_path / "clients.json"
    for _ in range(2):
        result = await token_command(
            "--user", "alice", "--base-url", foreign.url, "--credentials-file", str(path), "--json"
        )
        assert result.returncode == 0, result.stderr.decode()
    assert len(foreign.registered) == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {foreign.issuer: {"client_id": foreign.registered[0]}}


async def test_the_cli_refuses_a_secret_without_a_client_id(foreign: ForeignServer) -> None:
    result = await token_command("--user", "alice", "--base-url", foreign.url, "--client-secret", "s")
    assert result.returncode == 1 and b"--client-secret needs --client-id" in result.stderr


async def test_the_cli_against_our_embedded_server_with_registration_and_with_a_metadata_document(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server(auth_mode="embedded", oauth_cimd_allow_loopback="on")
    path = tmp_path / "clients.json"
    runs = []
    for _ in range(2):
        result = await token_command(
            "--user", "alice", "--base-url", server.url, "--credentials-file", str(path), "--json"
        )
        assert result.returncode == 0, result.stderr.decode()
        runs.append(json.loads(result.stdout))
    assert runs[0]["client_id"] == runs[1]["client_id"] == json.loads(path.read_text())[server.url]["client_id"]
    assert runs[0]["scope"] == "mcp"  # the 401 challenge's scope

    with DocumentServer() as documents:
        client_id = documents.publish(
            "/refserver-cli.json",
            client_name="refserver token command (metadata document)",
            redirect_uris=[LOOPBACK_REDIRECT],
            cache_control=None,
        )
        result = await token_command(
            "--user", "bob", "--base-url", server.url, "--client-metadata-url", client_id, "--json"
        )
    assert result.returncode == 0, result.stderr.decode()
    tokens = json.loads(result.stdout)
    assert tokens["client_id"] == client_id and documents.count("/refserver-cli.json") >= 1
    async with httpx.AsyncClient(timeout=10.0) as http:
        answer = await http.post(
            server.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={
                "Authorization": f"Bearer {tokens['access_token']}",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert answer.status_code != 401, answer.text
