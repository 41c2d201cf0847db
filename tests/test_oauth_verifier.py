"""The resource server's token verification in its three modes, against real components.

Embedded mode uses a real `AuthorizationServer` over a `MemoryKeyValueStore`. The jwt and introspection
modes talk over real HTTP to a real `AuthorizationServer` behind its real routes (`refserver.oauth.routes`),
served by a real Hypercorn (its `trio.serve`, in the fixture's nursery), so stopping and restarting that app
is a real outage.
Wall-clock time (token expiry, cache lifetimes) comes from a fake clock shared by the authorization server
and the verifier; only the availability probes use real (short) intervals, guarded by `fail_after`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from quart import request
from quart_trio import QuartTrio

from refserver.backend.memory_kv import MemoryKeyValueStore
from refserver.config import Settings
from refserver.errors import AuthServerUnavailable, ConfigError, InsufficientScope, Unauthorized
from refserver.oauth import routes
from refserver.oauth.access_tokens import NOT_BEFORE_LEEWAY
from refserver.oauth.assembly import create_verifier
from refserver.oauth.clients import ClientCredentials
from refserver.oauth.crypto import new_token, s256_challenge
from refserver.oauth.embedded_verifier import EmbeddedVerifier
from refserver.oauth.http import client_credentials
from refserver.oauth.introspection_verifier import IntrospectionVerifier
from refserver.oauth.jwt_verifier import JwtVerifier
from refserver.oauth.keys import SigningKeys
from refserver.oauth.ratelimit import RateLimiter
from refserver.oauth.resource import (
    ResourceGuard,
    challenge_for,
    protected_resource_metadata,
    resource_metadata_path,
    www_authenticate,
)
from refserver.oauth.server import AuthorizationServer
from refserver.oauth.store import OAuthStore
from refserver.oauth.verifier import State, TokenVerifier
from tests.redis_server import free_port

RESOURCE = "http://127.0.0.1:3232/mcp"
OTHER_RESOURCE = "http://127.0.0.1:4444/mcp"
RS_CREDENTIALS = ("resource-server", "resource-server-secret")
REDIRECT_URI = "http://127.0.0.1/callback"
FAST_PROBE = 0.05
"""Probe interval of the tests that watch an outage (real seconds)."""
WAIT = 5.0
"""Longest a test waits for a state change before failing."""

Mode = Literal["embedded", "jwt", "introspection"]
MODES: tuple[Mode, ...] = ("embedded", "jwt", "introspection")


class FakeClock:
    """Wall-clock seconds that move only when told to (whole seconds, like the JWT claims)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64url(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def make_server(issuer: str, clock: FakeClock, *, access_ttl: float = 300.0) -> AuthorizationServer:
    kv = MemoryKeyValueStore(clock=clock)  # revocation markers expire on the same clock as the tokens
    keys = SigningKeys(kv)
    await keys.load_or_create()
    return AuthorizationServer(
        issuer=issuer,
        resources=(RESOURCE, OTHER_RESOURCE),
        scopes_supported=("mcp", "offline_access"),
        default_scopes=("mcp",),
        store=OAuthStore(kv, code_ttl=60.0, access_ttl=access_ttl, refresh_ttl=3600.0),
        keys=keys,
        access_ttl=access_ttl,
        introspection_credentials=RS_CREDENTIALS,
        clock=clock,
    )


@attrs.frozen
class Issued:
    access_token: str
    refresh_token: str
    credentials: ClientCredentials


async def issue(server: AuthorizationServer, *, scope: str = "mcp", resource: str = RESOURCE) -> Issued:
    """The whole authorization code flow with PKCE, as a client and a person would drive it."""
    client = await server.clients.register(
        {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "client_secret_post"}
    )
    credentials = ClientCredentials(client["client_id"], client["client_secret"])
    verifier = new_token()
    pending = await server.authorization.begin(
        {
            "client_id": client["client_id"],
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
            "state": "xyz",
            "scope": scope,
            "resource": resource,
        }
    )
    assert await server.authorization.record_consent(pending.request_id, True) is None
    redirect = await server.authorization.complete(pending.request_id, "alice")
    code = parse_qs(urlsplit(redirect).query)["code"][0]
    tokens = await server.tokens.token(
        {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI},
        credentials,
    )
    return Issued(tokens["access_token"], tokens["refresh_token"], credentials)


def claims_of(server: AuthorizationServer, clock: FakeClock, **override: Any) -> dict[str, Any]:
    now = int(clock())
    claims = {
        "iss": server.issuer,
        "sub": "alice",
        "aud": RESOURCE,
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": new_token(),
        "scope": "mcp",
        "client_id": "some-client",
    }
    claims.update(override)
    return claims


def auth_app(server: AuthorizationServer) -> QuartTrio:
    """The real authorization server blueprint, plus one misbehaving introspection endpoint."""
    app = QuartTrio("test-authorization-server")
    app.register_blueprint(routes.create_blueprint(server, RateLimiter(server.store.kv, 10_000, ())))

    @app.post("/introspect-foreign-issuer")
    async def introspect_foreign() -> dict[str, Any]:
        """A server whose introspection answers name another issuer."""
        form = dict(await request.form)
        answer = await server.introspection.introspect(
            form, client_credentials(request.headers.get("Authorization"), form)
        )
        return {**answer, "iss": "https://evil.example"}

    return app


@attrs.define
class RunningAuthServer:
    """The app above in a real Hypercorn; stop() and start() again on the same port simulate an outage."""

    server: AuthorizationServer
    port: int
    nursery: trio.Nursery
    _stop: trio.Event = attrs.field(factory=trio.Event)
    _stopped: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._stop, self._stopped = trio.Event(), trio.Event()
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.graceful_timeout = 0.1
        await self.nursery.start(self._serve, config)

    async def _serve(self, config: Config, *, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(auth_app(self.server), config, shutdown_trigger=self._stop.wait, task_status=task_status)
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        self._stop.set()
        with trio.fail_after(WAIT):
            await self._stopped.wait()


@attrs.define
class Env:
    mode: Mode
    server: AuthorizationServer
    clock: FakeClock
    verifier: TokenVerifier
    auth: RunningAuthServer | None


Factory = Callable[..., Awaitable[Env]]


@pytest.fixture
async def env() -> AsyncIterator[Factory]:
    async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:

        async def make(
            mode: Mode,
            *,
            access_ttl: float = 300.0,
            shared_store: bool = True,
            cache_ttl: float = 30.0,
            trusted_host: str = "127.0.0.1",
            client_secret: str = RS_CREDENTIALS[1],
            introspection_path: str | None = None,
            **options: Any,
        ) -> Env:
            clock = FakeClock()
            port = free_port()
            server = await make_server(f"http://127.0.0.1:{port}", clock, access_ttl=access_ttl)
            auth = None
            verifier: TokenVerifier
            if mode == "embedded":
                verifier = EmbeddedVerifier(server, resource=RESOURCE)
            else:
                auth = RunningAuthServer(server, port, nursery)
                await auth.start()
                common: dict[str, Any] = {"issuer": f"http://{trusted_host}:{port}", "resource": RESOURCE, "http": http}
                common.update(clock=clock, **options)
                if mode == "jwt":
                    verifier = JwtVerifier(revocations=server.store if shared_store else None, **common)
                else:
                    verifier = IntrospectionVerifier(
                        introspection_url=f"{auth.url}{introspection_path}" if introspection_path else None,
                        client_id=RS_CREDENTIALS[0],
                        client_secret=client_secret,
                        cache_ttl=cache_ttl,
                        **common,
                    )
            await nursery.start(verifier.run)
            return Env(mode, server, clock, verifier, auth)

        yield make
        nursery.cancel_scope.cancel()


async def wait_for_state(verifier: TokenVerifier, state: State) -> None:
    assert isinstance(verifier, (JwtVerifier, IntrospectionVerifier))
    with trio.fail_after(WAIT):
        await verifier.wait_state(state)


# --- the same properties in every mode -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_valid_token_is_accepted(env: Factory, mode: Mode) -> None:
    e = await env(mode)
    issued = await issue(e.server)
    info = await e.verifier.verify(issued.access_token)
    assert info.subject == "alice"
    assert info.client_id == issued.credentials.client_id
    assert info.scopes == {"mcp"}
    assert RESOURCE in info.audience
    assert info.expires_at == int(e.clock()) + 300
    assert info.token_id
    assert e.verifier.state == "ok"
    assert e.verifier.statistics()["accepted"] == 1


@pytest.mark.parametrize("mode", MODES)
async def test_token_for_another_resource_is_rejected(env: Factory, mode: Mode) -> None:
    e = await env(mode)
    issued = await issue(e.server, resource=OTHER_RESOURCE)
    with pytest.raises(Unauthorized) as caught:
        await e.verifier.verify(issued.access_token)
    assert caught.value.error == "invalid_token"
    assert e.verifier.statistics()["rejected"] == 1


@pytest.mark.parametrize("mode", MODES)
async def test_expired_token_is_rejected(env: Factory, mode: Mode) -> None:
    e = await env(mode, access_ttl=60.0, cache_ttl=120.0)
    issued = await issue(e.server)
    await e.verifier.verify(issued.access_token)
    e.clock.advance(59)
    await e.verifier.verify(issued.access_token)
    e.clock.advance(1)  # exactly exp
    with pytest.raises(Unauthorized):
        await e.verifier.verify(issued.access_token)


@pytest.mark.parametrize("mode", MODES)
async def test_revoked_token_is_rejected(env: Factory, mode: Mode) -> None:
    e = await env(mode)
    issued = await issue(e.server)
    await e.server.revoker.revoke({"token": issued.access_token}, issued.credentials)
    with pytest.raises(Unauthorized):
        await e.verifier.verify(issued.access_token)


@pytest.mark.parametrize("mode", MODES)
async def test_tokens_of_a_revoked_grant_are_rejected(env: Factory, mode: Mode) -> None:
    e = await env(mode)
    issued = await issue(e.server)
    await e.server.revoker.revoke(
        {"token": issued.refresh_token}, issued.credentials
    )  # RFC 7009 sec. 2.1: the grant goes
    with pytest.raises(Unauthorized):
        await e.verifier.verify(issued.access_token)


@pytest.mark.parametrize("mode", MODES)
async def test_token_of_another_issuer_is_rejected(env: Factory, mode: Mode) -> None:
    e = await env(mode, introspection_path="/introspect-foreign-issuer" if mode == "introspection" else None)
    if mode == "introspection":
        token = (await issue(e.server)).access_token
    else:
        token = e.server.keys.sign(claims_of(e.server, e.clock, iss="https://evil.example"))
    with pytest.raises(Unauthorized):
        await e.verifier.verify(token)


def _garbage(server: AuthorizationServer, clock: FakeClock) -> list[str]:
    claims = claims_of(server, clock)
    foreign = ECKey.generate_key("P-256", auto_kid=True)
    return [
        "x",
        "a.b.c",
        "a.b.c.d.e",
        f"{b64url([])}.{b64url(claims)}.{b64url(b'sig')}",  # a header that is not an object
        f"{b64url('ES256')}.{b64url(claims)}.{b64url(b'sig')}",
        f"{b64url({'alg': 'ES256'})}.{b64url(b'not json')}.{b64url(b'sig')}",
        f"{b64url({'alg': 'ES256', 'typ': 'at+jwt', 'kid': 7})}.{b64url(claims)}.{b64url(b'sig')}",
        f"{b64url({'alg': 'none', 'typ': 'at+jwt'})}.{b64url(claims)}.",
        jwt.encode({"alg": "HS256", "typ": "at+jwt"}, claims, OctKey.generate_key(256), algorithms=["HS256"]),
        jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": foreign.kid}, claims, foreign, algorithms=["ES256"]),
        # a key we know under another kid's name: the signature must still fail
        jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": server.keys.current.kid}, claims, foreign, algorithms=["ES256"]
        ),
        "e" * 10_000,
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_garbage_and_forged_tokens_are_rejected_cleanly(env: Factory, mode: Mode) -> None:
    e = await env(mode)
    for token in _garbage(e.server, e.clock):
        with pytest.raises(Unauthorized):
            await e.verifier.verify(token)
    assert e.verifier.state == "ok"


@pytest.mark.parametrize("mode", MODES)
async def test_token_without_the_required_scope_is_insufficient(env: Factory, mode: Mode) -> None:
    e = await env(mode)
    guard = ResourceGuard(e.verifier, Settings(required_scope="mcp"))
    narrow = await issue(e.server, scope="offline_access")
    with pytest.raises(InsufficientScope) as caught:
        await guard.authenticate(f"Bearer {narrow.access_token}")
    assert caught.value.required == "mcp"
    assert caught.value.http_status == 403
    full = await issue(e.server)
    assert (await guard.authenticate(f"bearer  {full.access_token}")).subject == "alice"


# --- jwt mode -----------------------------------------------------------------------------------------


async def test_jwt_revocation_without_shared_store_is_honoured_at_exp(env: Factory) -> None:
    e = await env("jwt", shared_store=False, access_ttl=60.0)
    issued = await issue(e.server)
    await e.server.revoker.revoke({"token": issued.access_token}, issued.credentials)
    assert (await e.verifier.verify(issued.access_token)).subject == "alice"  # documented limitation
    e.clock.advance(60)
    with pytest.raises(Unauthorized):
        await e.verifier.verify(issued.access_token)


async def test_jwt_revoked_token_never_verifies_again_up_to_and_past_exp(env: Factory) -> None:
    """The shared store's revocation marker lives until `exp`, and `exp` gets no leeway: no gap at the end."""
    e = await env("jwt", access_ttl=60.0)
    issued = await issue(e.server)
    await e.server.revoker.revoke({"token": issued.access_token}, issued.credentials)
    for _ in range(61 + NOT_BEFORE_LEEWAY):
        with pytest.raises(Unauthorized):
            await e.verifier.verify(issued.access_token)
        e.clock.advance(1)


async def test_jwt_unknown_kid_triggers_a_jwks_refetch_and_then_verifies(env: Factory) -> None:
    e = await env("jwt")
    await e.verifier.verify((await issue(e.server)).access_token)
    assert e.verifier.statistics()["jwks_fetches"] == 1
    new_kid = await e.server.keys.rotate()
    token = (await issue(e.server)).access_token
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == new_kid
    assert (await e.verifier.verify(token)).subject == "alice"
    stats = e.verifier.statistics()
    assert stats["jwks_fetches"] == 2
    assert stats["keys"] == 2


async def test_jwt_unknown_kid_refetches_at_most_once_per_interval(env: Factory) -> None:
    e = await env("jwt")
    foreign = ECKey.generate_key("P-256", auto_kid=True)
    header = {"alg": "ES256", "typ": "at+jwt", "kid": foreign.kid}
    forged = jwt.encode(header, claims_of(e.server, e.clock), foreign, algorithms=["ES256"])
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await e.verifier.verify(forged)
    assert e.verifier.statistics()["jwks_fetches"] == 2  # start-up, then one refetch for the unknown kid


async def test_jwt_refuses_a_non_access_token_signed_by_the_right_key(env: Factory) -> None:
    e = await env("jwt")
    current = e.server.keys.current
    header = {"alg": "ES256", "typ": "JWT", "kid": current.kid}  # e.g. an ID token: RFC 9068 sec. 4
    token = jwt.encode(header, claims_of(e.server, e.clock), current, algorithms=["ES256"])
    with pytest.raises(Unauthorized):
        await e.verifier.verify(token)


async def test_jwt_not_before_allows_a_little_issuer_clock_skew_only(env: Factory) -> None:
    e = await env("jwt")
    now = int(e.clock())
    ahead = e.server.keys.sign(claims_of(e.server, e.clock, nbf=now + NOT_BEFORE_LEEWAY))
    assert (await e.verifier.verify(ahead)).subject == "alice"
    future = e.server.keys.sign(claims_of(e.server, e.clock, nbf=now + NOT_BEFORE_LEEWAY + 1))
    with pytest.raises(Unauthorized):
        await e.verifier.verify(future)


async def test_metadata_naming_another_issuer_is_refused(env: Factory, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8414 sec. 3.3: localhost and 127.0.0.1 are different issuers; the verifier does not trust it."""
    e = await env("jwt", trusted_host="localhost")
    assert e.verifier.state == "degraded"
    assert "the metadata names issuer 'http://127.0.0.1:" in caplog.text
    with pytest.raises(AuthServerUnavailable):
        await e.verifier.verify((await issue(e.server)).access_token)


# --- introspection mode -------------------------------------------------------------------------------


async def test_introspection_refuses_a_refresh_token_used_as_bearer(env: Factory) -> None:
    e = await env("introspection")
    issued = await issue(e.server)
    with pytest.raises(Unauthorized):
        await e.verifier.verify(issued.refresh_token)


async def test_introspection_cache_keeps_a_revoked_token_at_most_cache_ttl(env: Factory) -> None:
    e = await env("introspection", cache_ttl=5.0)
    issued = await issue(e.server)
    await e.verifier.verify(issued.access_token)
    await e.server.revoker.revoke({"token": issued.access_token}, issued.credentials)
    e.clock.advance(4.9)
    assert (await e.verifier.verify(issued.access_token)).subject == "alice"  # cached
    assert e.verifier.statistics()["introspections"] == 1
    e.clock.advance(0.1)
    with pytest.raises(Unauthorized):
        await e.verifier.verify(issued.access_token)
    assert e.verifier.statistics()["introspections"] == 2


async def test_introspection_cache_never_outlives_the_token(env: Factory) -> None:
    e = await env("introspection", cache_ttl=60.0, access_ttl=10.0)
    issued = await issue(e.server)
    await e.verifier.verify(issued.access_token)
    e.clock.advance(9)
    await e.verifier.verify(issued.access_token)
    assert e.verifier.statistics()["introspections"] == 1
    e.clock.advance(1)  # exactly exp: the entry is gone, and the server says the token is no longer active
    with pytest.raises(Unauthorized):
        await e.verifier.verify(issued.access_token)
    assert e.verifier.statistics()["introspections"] == 2


async def test_introspection_cache_is_bounded_and_evicts_the_least_recently_used(env: Factory) -> None:
    e = await env("introspection", cache_max_entries=2)
    a, b, c = [(await issue(e.server)).access_token for _ in range(3)]
    for token in (a, b, c):
        await e.verifier.verify(token)
    stats = e.verifier.statistics()
    assert (stats["cache_entries"], stats["introspections"]) == (2, 3)
    await e.verifier.verify(b)  # still cached
    assert e.verifier.statistics()["introspections"] == 3
    await e.verifier.verify(a)  # evicted first
    assert e.verifier.statistics()["introspections"] == 4
    assert e.verifier.statistics()["cache_entries"] == 2


async def test_introspection_negative_answers_are_not_cached(env: Factory) -> None:
    e = await env("introspection")
    issued = await issue(e.server)
    await e.server.revoker.revoke({"token": issued.access_token}, issued.credentials)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await e.verifier.verify(issued.access_token)
    assert e.verifier.statistics()["introspections"] == 2
    assert e.verifier.statistics()["cache_entries"] == 0


async def test_introspection_with_refused_credentials_is_unavailable_not_unauthorized(env: Factory) -> None:
    e = await env("introspection", client_secret="wrong")
    with pytest.raises(AuthServerUnavailable):
        await e.verifier.verify((await issue(e.server)).access_token)
    assert e.verifier.state == "ok"  # the server answers; only this call failed


# --- availability -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["jwt", "introspection"])
async def test_outage_degrades_and_recovery_is_automatic(env: Factory, mode: Mode) -> None:
    e = await env(mode, probe_interval=FAST_PROBE, probe_retry_interval=FAST_PROBE)
    assert e.auth is not None
    token = (await issue(e.server)).access_token
    await e.verifier.verify(token)
    await e.auth.stop()
    await wait_for_state(e.verifier, "degraded")
    with pytest.raises(AuthServerUnavailable) as caught:
        await e.verifier.verify(token)
    assert caught.value.http_status == 503
    await e.auth.start()  # same port, same keys
    await wait_for_state(e.verifier, "ok")
    assert (await e.verifier.verify(token)).subject == "alice"
    stats = e.verifier.statistics()
    assert stats["unavailable"] >= 1 and stats["accepted"] == 2


async def test_network_failure_during_verify_degrades_at_once(env: Factory) -> None:
    e = await env("introspection", probe_interval=3600.0, probe_retry_interval=FAST_PROBE)
    assert e.auth is not None
    token = (await issue(e.server)).access_token
    await e.auth.stop()
    with pytest.raises(AuthServerUnavailable):
        await e.verifier.verify(token)
    assert e.verifier.state == "degraded"
    await e.auth.start()
    await wait_for_state(e.verifier, "ok")
    assert (await e.verifier.verify(token)).subject == "alice"


# --- the guard and the pure helpers -------------------------------------------------------------------


async def test_guard_refuses_missing_foreign_and_malformed_credentials(env: Factory) -> None:
    e = await env("embedded")
    guard = ResourceGuard(e.verifier, Settings())
    for header in (None, "", "   "):
        with pytest.raises(Unauthorized) as caught:
            await guard.authenticate(header)
        assert caught.value.error is None  # RFC 6750 sec. 3.1: no error code without credentials
    with pytest.raises(Unauthorized) as caught:
        await guard.authenticate("Basic dXNlcjpwYXNz")
    assert caught.value.error is None  # an unsupported scheme is treated like no credentials (sec. 3)
    for header in ("Bearer", "Bearer ", "Bearer a b", 'Bearer "quoted"', "Bearer tok\u00e9n", "Bearer " + "a" * 9000):
        with pytest.raises(Unauthorized) as caught:
            await guard.authenticate(header)
        assert caught.value.error == "invalid_token"


def test_www_authenticate_formatting() -> None:
    settings = Settings(base_url="https://mcp.example.com")
    metadata = 'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
    assert www_authenticate(settings) == f'Bearer {metadata}, scope="mcp"'
    assert (
        www_authenticate(settings, error="invalid_token", description="the token has expired")
        == f'Bearer {metadata}, scope="mcp", error="invalid_token", error_description="the token has expired"'
    )
    assert www_authenticate(settings, error="insufficient_scope", scope="mcp admin") == (
        f'Bearer {metadata}, scope="mcp admin", error="insufficient_scope"'
    )
    hostile = www_authenticate(settings, error="invalid_token", description='say "hi"\\\r\nSet-Cookie: x=1 \u00e9')
    assert hostile.endswith("error_description=\"say 'hi'/??Set-Cookie: x=1 ?\"")
    assert all(0x20 <= ord(c) <= 0x7E for c in hostile)
    assert www_authenticate(Settings(required_scope="")) == (
        'Bearer resource_metadata="http://localhost:3232/.well-known/oauth-protected-resource/mcp"'
    )


def test_challenge_for_each_refusal() -> None:
    settings = Settings()
    assert "error=" not in challenge_for(settings, Unauthorized("no credentials", error=None))
    expired = challenge_for(settings, Unauthorized("expired"))
    assert expired.endswith('error="invalid_token", error_description="expired"')
    scope = challenge_for(settings, InsufficientScope("needs mcp", required="mcp"))
    assert 'scope="mcp", error="insufficient_scope", error_description="needs mcp"' in scope


def test_protected_resource_metadata_fields() -> None:
    settings = Settings(base_url="https://mcp.example.com", auth_mode="jwt", auth_server_url="https://auth.example.com")
    assert protected_resource_metadata(settings) == {
        "resource": "https://mcp.example.com/mcp",
        "authorization_servers": ["https://auth.example.com"],
        # offline_access is the AS's business (refresh tokens), not a scope a resource asks for
        "scopes_supported": ["mcp", "mcp:admin"],
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP Feature Reference Server (refserver)",
        "resource_documentation": "https://mcp.example.com",
    }
    assert protected_resource_metadata(Settings())["authorization_servers"] == ["http://localhost:3232"]
    prefixed = Settings(base_url="https://example.com/tools")
    assert resource_metadata_path(prefixed) == "/.well-known/oauth-protected-resource/tools/mcp"  # RFC 9728 sec. 3.1


async def test_create_verifier_for_each_mode() -> None:
    clock = FakeClock()
    server = await make_server("http://localhost:3232", clock)
    async with httpx.AsyncClient() as http:
        build = partial(create_verifier, server=server, store=server.store, http=http)
        assert build(Settings(auth_mode="none")) is None
        assert isinstance(build(Settings(auth_mode="embedded")), EmbeddedVerifier)
        with pytest.raises(ConfigError):
            create_verifier(Settings(auth_mode="embedded"), server=None, store=None, http=http)
        local = build(Settings(auth_mode="jwt"))
        assert isinstance(local, JwtVerifier) and local.statistics()["revocation_checks"] is False
        shared = build(Settings(auth_mode="jwt", redis_url="redis://127.0.0.1:6379"))
        assert isinstance(shared, JwtVerifier) and shared.statistics()["revocation_checks"] is True
        assert shared.metadata_url == "http://localhost:3001/.well-known/oauth-authorization-server"
        with pytest.raises(ConfigError):
            build(Settings(auth_mode="introspection"))
        introspection = build(
            Settings(auth_mode="introspection", introspection_client_id="rs", introspection_client_secret="s")
        )
        assert isinstance(introspection, IntrospectionVerifier)
