"""The embedded authorization server over HTTP, in process: Quart's test client in front of the real blueprint,
the real AuthorizationServer, OAuthStore and SigningKeys over the in-memory key-value store."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import attrs
import pytest
from quart.typing import TestClientProtocol as QuartClient
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers

from refserver.backend.memory_kv import MemoryKeyValueStore
from refserver.oauth.crypto import new_token, s256_challenge
from refserver.oauth.keys import SigningKeys
from refserver.oauth.ratelimit import RateLimiter
from refserver.oauth.routes import create_blueprint
from refserver.oauth.server import AuthorizationServer
from refserver.oauth.store import OAuthStore

ISSUER = "http://localhost:3232"
RESOURCE = "http://localhost:3232/mcp"
REDIRECT = "https://client.example/callback"
LOOPBACK_REDIRECT = "http://127.0.0.1:4444/cb"
CODE_TTL = 60.0
RS_CREDENTIALS = ("rs", "rs-secret")
HTML_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Response = Any  # quart.wrappers.Response; the test client's type is loose


class FakeClock:
    """Shared by the store and the server, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@attrs.define
class Env:
    client: QuartClient
    server: AuthorizationServer
    clock: FakeClock


async def make_env(*, per_minute: int = 10_000) -> Env:
    clock = FakeClock()
    kv = MemoryKeyValueStore(clock=clock)
    store = OAuthStore(kv, code_ttl=CODE_TTL, access_ttl=3600, refresh_ttl=86400)
    keys = SigningKeys(kv)
    await keys.load_or_create()
    server = AuthorizationServer(
        issuer=ISSUER,
        resources=[RESOURCE],
        scopes_supported=["mcp", "offline_access"],
        default_scopes=["mcp"],
        store=store,
        keys=keys,
        access_ttl=3600,
        introspection_credentials=RS_CREDENTIALS,
        clock=clock,
    )
    app = QuartTrio(__name__)
    app.register_blueprint(create_blueprint(server, RateLimiter(kv, per_minute, trusted_proxies=["10.0.0.0/8"])))
    return Env(app.test_client(), server, clock)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    yield await make_env()


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}


def query_of(response: Response) -> dict[str, str]:
    location = response.headers["Location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def register(env: Env, **metadata: Any) -> dict[str, Any]:
    body = {"client_name": "Test client", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    body.update(metadata)
    response = await env.client.post("/register", json=body)
    assert response.status_code == 201, await response.get_data(as_text=True)
    result: dict[str, Any] = await response.get_json()
    return result


def authorize_params(client: Mapping[str, Any], verifier: str, **overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
        "state": "st-" + new_token()[:8],
        "scope": "mcp offline_access",
        "resource": RESOURCE,
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v != "-"}


def request_id_of(page: str) -> str:
    match = re.search(r'name="request_id" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


async def approve(env: Env, page: str) -> str:
    """Approve on the consent page; returns the IdP page URL."""
    response = await env.client.post(
        "/authorize/consent", form={"request_id": request_id_of(page), "decision": "approve"}
    )
    assert response.status_code == 302
    location: str = response.headers["Location"]
    assert location.startswith("/mock-upstream-idp/authorize?state=")
    return location


async def authorize(env: Env, client: Mapping[str, Any], verifier: str, user: str = "alice", **overrides: str) -> str:
    """The whole browser flow; returns the code (after checking state and iss)."""
    params = authorize_params(client, verifier, **overrides)
    response = await env.client.get("/authorize", query_string=params)
    assert response.status_code == 200, await response.get_data(as_text=True)
    idp_url = await approve(env, await response.get_data(as_text=True))
    idp = await env.client.get(idp_url)
    assert idp.status_code == 200
    state = parse_qs(urlsplit(idp_url).query)["state"][0]
    callback = await env.client.get("/mock-upstream-idp/callback", query_string={"state": state, "userId": user})
    assert callback.status_code == 302
    assert callback.headers["Location"].startswith(params["redirect_uri"] + "?")
    result = query_of(callback)
    assert result["state"] == params["state"]
    assert result["iss"] == ISSUER
    return result["code"]


async def post_token(env: Env, form: dict[str, str], headers: dict[str, str] | None = None) -> Response:
    return await env.client.post("/token", form=form, headers=headers or {})


async def exchange(env: Env, client: Mapping[str, Any], code: str, verifier: str) -> Response:
    return await post_token(
        env,
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
        },
    )


async def tokens_for(env: Env, client: Mapping[str, Any], user: str = "alice") -> dict[str, Any]:
    verifier = new_token()
    code = await authorize(env, client, verifier, user=user)
    response = await exchange(env, client, code, verifier)
    assert response.status_code == 200, await response.get_data(as_text=True)
    tokens: dict[str, Any] = await response.get_json()
    return tokens


async def introspect(env: Env, token: str, credentials: tuple[str, str] = RS_CREDENTIALS) -> Response:
    return await env.client.post("/introspect", form={"token": token}, headers=basic(*credentials))


async def is_active(env: Env, token: str) -> bool:
    response = await introspect(env, token)
    assert response.status_code == 200
    return bool((await response.get_json())["active"])


async def refresh(env: Env, client: Mapping[str, Any], token: str, **extra: str) -> Response:
    return await post_token(
        env, {"grant_type": "refresh_token", "refresh_token": token, "client_id": client["client_id"], **extra}
    )


async def error_of(response: Response) -> str:
    body = await response.get_json()
    assert set(body) >= {"error", "error_description"}, body
    return str(body["error"])


# --- discovery --------------------------------------------------------------------------------------


async def test_metadata_fields(env: Env) -> None:
    response = await env.client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "max-age=" in response.headers["Cache-Control"]
    meta = await response.get_json()
    assert meta["issuer"] == ISSUER
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert meta["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert meta["registration_endpoint"] == f"{ISSUER}/register"
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert meta["response_types_supported"] == ["code"]


async def test_jwks_has_public_keys_only(env: Env) -> None:
    response = await env.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    keys = (await response.get_json())["keys"]
    assert keys and all(k["kty"] == "EC" and k["alg"] == "ES256" and "kid" in k for k in keys)
    assert all("d" not in k for k in keys)


async def test_cors_preflight(env: Env) -> None:
    for path in ("/token", "/register", "/revoke", "/.well-known/oauth-authorization-server"):
        response = await env.client.options(path, headers={"Origin": "https://app.example"})
        assert response.status_code == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        allowed = response.headers["Access-Control-Allow-Headers"]
        assert {"Authorization", "Content-Type", "MCP-Protocol-Version"} <= {h.strip() for h in allowed.split(",")}
        assert int(response.headers["Access-Control-Max-Age"]) > 0
        assert "OPTIONS" in response.headers["Access-Control-Allow-Methods"]


# --- registration -----------------------------------------------------------------------------------


async def test_register_public_and_confidential(env: Env) -> None:
    public = await register(env)
    assert public["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in public
    confidential = await register(env, token_endpoint_auth_method="client_secret_basic")
    assert confidential["client_secret"] and confidential["client_secret_expires_at"] == 0
    assert confidential["client_id"] != public["client_id"]
    response = await env.client.post("/register", json={"redirect_uris": [REDIRECT]})
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_register_requires_https_or_loopback(env: Env) -> None:
    await register(env, redirect_uris=["http://localhost:9999/cb", "http://127.0.0.1/cb", "https://a.example/x"])
    for bad in (
        "http://client.example/cb",
        "https://client.example/cb#frag",
        "javascript:alert(1)",
        "/relative",
        "http://[::1/cb",  # unparsable: urlsplit raises
        "https://client.example:99999/cb",
    ):
        response = await env.client.post("/register", json={"redirect_uris": [bad]})
        assert response.status_code == 400, bad
        assert await error_of(response) == "invalid_redirect_uri"


async def test_register_rejects_bad_metadata(env: Env) -> None:
    cases: list[dict[str, Any]] = [
        {"redirect_uris": []},
        {"redirect_uris": "https://a.example/cb"},
        {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"},
        {"redirect_uris": [REDIRECT], "grant_types": ["implicit"]},
        {"redirect_uris": [REDIRECT], "response_types": ["token"]},
        {"redirect_uris": [REDIRECT], "scope": "admin"},
        {"redirect_uris": [REDIRECT], "client_name": "x" * 500},
        {"redirect_uris": [REDIRECT], "grant_types": [{}]},
    ]
    for body in cases:
        response = await env.client.post("/register", json=body)
        assert response.status_code == 400, body
        assert await error_of(response) in ("invalid_redirect_uri", "invalid_client_metadata")
    not_json = await env.client.post("/register", data=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert await error_of(not_json) == "invalid_client_metadata"
    array = await env.client.post("/register", json=[REDIRECT])
    assert array.status_code == 400
    wrong_type = await env.client.post("/register", form={"redirect_uris": REDIRECT})
    assert wrong_type.status_code == 415
    assert await error_of(wrong_type) == "invalid_request"


# --- /authorize -------------------------------------------------------------------------------------


async def test_pkce_required_and_s256_only(env: Env) -> None:
    client = await register(env)
    verifier = new_token()
    for overrides in ({"code_challenge_method": "plain", "code_challenge": verifier}, {"code_challenge": "-"}):
        params = authorize_params(client, verifier, **overrides)
        response = await env.client.get("/authorize", query_string=params)
        assert response.status_code == 302, overrides
        result = query_of(response)
        assert result["error"] == "invalid_request"
        assert result["state"] == params["state"] and result["iss"] == ISSUER
        assert response.headers["Location"].startswith(REDIRECT + "?")
    no_method = authorize_params(client, verifier, code_challenge_method="-")
    response = await env.client.get("/authorize", query_string=no_method)
    assert response.status_code == 302 and query_of(response)["error"] == "invalid_request"


async def test_wrong_verifier_is_invalid_grant(env: Env) -> None:
    client = await register(env)
    verifier = new_token()
    code = await authorize(env, client, verifier)
    response = await exchange(env, client, code, new_token())
    assert response.status_code == 400
    assert await error_of(response) == "invalid_grant"
    # The code is burnt: even the right verifier no longer works.
    retry = await exchange(env, client, code, verifier)
    assert await error_of(retry) == "invalid_grant"


async def test_redirect_uri_exact_match_and_loopback_any_port(env: Env) -> None:
    client = await register(env, redirect_uris=[REDIRECT, LOOPBACK_REDIRECT])
    verifier = new_token()
    for near_miss in (
        REDIRECT + "/",
        REDIRECT + "?x=1",
        "https://client.example/callbacK",
        "https://CLIENT.example.evil/callback",
    ):
        response = await env.client.get(
            "/authorize", query_string=authorize_params(client, verifier, redirect_uri=near_miss)
        )
        assert response.status_code == 400, near_miss
        assert "Location" not in response.headers
    other_port = "http://127.0.0.1:5555/cb"
    code = await authorize(env, client, verifier, redirect_uri=other_port)
    exchanged = await post_token(
        env,
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": client["client_id"],
            "redirect_uri": other_port,
        },
    )
    assert exchanged.status_code == 200
    wrong_path = await env.client.get(
        "/authorize", query_string=authorize_params(client, verifier, redirect_uri="http://127.0.0.1:5555/other")
    )
    assert wrong_path.status_code == 400 and "Location" not in wrong_path.headers


async def test_no_redirect_on_unknown_client_or_bad_redirect_uri(env: Env) -> None:
    client = await register(env)
    verifier = new_token()
    cases = [
        authorize_params({"client_id": "nope", "redirect_uris": [REDIRECT]}, verifier),
        authorize_params(client, verifier, redirect_uri="https://attacker.example/cb"),
        # Even with other errors present, an unverified redirect URI is never used.
        authorize_params(client, verifier, redirect_uri="https://attacker.example/cb", code_challenge="-"),
    ]
    for params in cases:
        response = await env.client.get("/authorize", query_string=params)
        assert response.status_code == 400
        assert "Location" not in response.headers
        assert response.content_type.startswith("text/html")
        page = await response.get_data(as_text=True)
        assert "attacker.example" not in page
    loopback = await register(env, redirect_uris=[LOOPBACK_REDIRECT])
    for broken in ("http://[::1/cb", "http://127.0.0.1:abc/cb", "http://127.0.0.1:99999/cb"):
        params = authorize_params(loopback, verifier, redirect_uri=broken)
        response = await env.client.get("/authorize", query_string=params)
        assert response.status_code == 400, broken
        assert "Location" not in response.headers
    repeated = await env.client.get(
        f"/authorize?client_id={client['client_id']}&client_id={client['client_id']}&response_type=code"
    )
    assert repeated.status_code == 400 and "Location" not in repeated.headers


async def test_full_code_flow(env: Env) -> None:
    client = await register(env)
    verifier = new_token()
    params = authorize_params(client, verifier)
    response = await env.client.get("/authorize", query_string=params)
    page = await response.get_data(as_text=True)
    assert "Test client" in page and "client.example" in page and RESOURCE in page
    assert 'value="approve"' in page and 'value="deny"' in page and 'action="/authorize/consent"' in page
    idp_url = await approve(env, page)
    idp = await env.client.get(idp_url)
    idp_page = await idp.get_data(as_text=True)
    for user in ("alice", "bob", "carol"):
        assert f'value="{user}"' in idp_page
    assert 'action="/mock-upstream-idp/callback"' in idp_page and 'name="userId"' in idp_page
    state = parse_qs(urlsplit(idp_url).query)["state"][0]
    callback = await env.client.get("/mock-upstream-idp/callback", query_string={"state": state, "userId": "bob"})
    assert callback.status_code == 302
    result = query_of(callback)
    assert set(result) == {"code", "state", "iss"}
    assert result["state"] == params["state"] and result["iss"] == ISSUER
    tokens = await exchange(env, client, result["code"], verifier)
    assert tokens.status_code == 200
    body = await tokens.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["refresh_token"]
    assert set(body["scope"].split()) == {"mcp", "offline_access"}
    info = await (await introspect(env, body["access_token"])).get_json()
    assert info["active"] is True and info["sub"] == "bob" and info["aud"] == RESOURCE
    assert info["client_id"] == client["client_id"]


async def test_consent_deny_redirects_with_access_denied(env: Env) -> None:
    client = await register(env)
    params = authorize_params(client, new_token())
    page = await (await env.client.get("/authorize", query_string=params)).get_data(as_text=True)
    request_id = request_id_of(page)
    response = await env.client.post("/authorize/consent", form={"request_id": request_id, "decision": "deny"})
    assert response.status_code == 302
    result = query_of(response)
    assert result["error"] == "access_denied" and result["state"] == params["state"]
    # The request is over: neither the IdP nor a second decision can use it.
    idp = await env.client.get("/mock-upstream-idp/authorize", query_string={"state": request_id})
    assert idp.status_code == 400
    again = await env.client.post("/authorize/consent", form={"request_id": request_id, "decision": "approve"})
    assert again.status_code == 400 and "Location" not in again.headers


async def test_consent_unknown_request_or_bad_decision(env: Env) -> None:
    response = await env.client.post("/authorize/consent", form={"request_id": "nope", "decision": "approve"})
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.content_type.startswith("text/html")
    client = await register(env)
    page = await (await env.client.get("/authorize", query_string=authorize_params(client, new_token()))).get_data(
        as_text=True
    )
    bad = await env.client.post("/authorize/consent", form={"request_id": request_id_of(page), "decision": "yes"})
    assert bad.status_code == 400
    cross_site = await env.client.post(
        "/authorize/consent",
        form={"request_id": request_id_of(page), "decision": "approve"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status_code == 400


async def test_callback_bad_missing_or_replayed_state_is_a_page(env: Env) -> None:
    client = await register(env)
    for query in ({"state": "unknown", "userId": "alice"}, {"userId": "alice"}, {"state": "x"}, {}):
        response = await env.client.get("/mock-upstream-idp/callback", query_string=query)
        assert response.status_code == 400, query
        assert "Location" not in response.headers
        assert response.content_type.startswith("text/html")
    params = authorize_params(client, new_token())
    page = await (await env.client.get("/authorize", query_string=params)).get_data(as_text=True)
    request_id = request_id_of(page)
    unapproved = await env.client.get("/mock-upstream-idp/authorize", query_string={"state": request_id})
    assert unapproved.status_code == 400
    await approve(env, page)
    bad_user = await env.client.get(
        "/mock-upstream-idp/callback", query_string={"state": request_id, "userId": "<script>x</script>"}
    )
    assert bad_user.status_code == 400
    assert "<script>x" not in await bad_user.get_data(as_text=True)
    ok = await env.client.get("/mock-upstream-idp/callback", query_string={"state": request_id, "userId": "carol"})
    assert ok.status_code == 302
    replay = await env.client.get("/mock-upstream-idp/callback", query_string={"state": request_id, "userId": "carol"})
    assert replay.status_code == 400 and "Location" not in replay.headers


# --- codes ------------------------------------------------------------------------------------------


async def test_code_single_use_and_replay_revokes_tokens(env: Env) -> None:
    client = await register(env)
    verifier = new_token()
    code = await authorize(env, client, verifier)
    first = await exchange(env, client, code, verifier)
    assert first.status_code == 200
    tokens = await first.get_json()
    assert await is_active(env, tokens["access_token"])
    replay = await exchange(env, client, code, verifier)
    assert replay.status_code == 400
    assert await error_of(replay) == "invalid_grant"
    assert not await is_active(env, tokens["access_token"])
    assert not await is_active(env, tokens["refresh_token"])
    assert await error_of(await refresh(env, client, tokens["refresh_token"])) == "invalid_grant"


async def test_code_expires(env: Env) -> None:
    client = await register(env)
    verifier = new_token()
    code = await authorize(env, client, verifier)
    env.clock.advance(CODE_TTL + 1)
    response = await exchange(env, client, code, verifier)
    assert response.status_code == 400
    assert await error_of(response) == "invalid_grant"


async def test_code_bound_to_client(env: Env) -> None:
    client = await register(env)
    other = await register(env)
    verifier = new_token()
    code = await authorize(env, client, verifier)
    response = await exchange(env, other, code, verifier)
    assert await error_of(response) == "invalid_grant"


# --- refresh ----------------------------------------------------------------------------------------


async def test_refresh_rotation_and_reuse_revokes_grant(env: Env) -> None:
    client = await register(env)
    tokens = await tokens_for(env, client)
    seen = {tokens["refresh_token"]}
    current = tokens
    for _ in range(3):
        response = await refresh(env, client, current["refresh_token"])
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        current = await response.get_json()
        assert current["refresh_token"] not in seen
        seen.add(current["refresh_token"])
    assert await is_active(env, current["access_token"])
    reuse = await refresh(env, client, tokens["refresh_token"])
    assert reuse.status_code == 400
    assert await error_of(reuse) == "invalid_grant"
    # Reuse means theft: the newest refresh token and access token die with the grant.
    assert await error_of(await refresh(env, client, current["refresh_token"])) == "invalid_grant"
    assert not await is_active(env, current["access_token"])


async def test_refresh_scope_narrowing(env: Env) -> None:
    client = await register(env)
    tokens = await tokens_for(env, client)
    narrowed = await refresh(env, client, tokens["refresh_token"], scope="mcp")
    assert narrowed.status_code == 200
    body = await narrowed.get_json()
    assert body["scope"] == "mcp"
    info = await (await introspect(env, body["access_token"])).get_json()
    assert info["scope"] == "mcp"
    # The rotated refresh token keeps the grant's scope, so the full scope can come back...
    again = await refresh(env, client, body["refresh_token"], scope="mcp offline_access")
    assert again.status_code == 200
    # ...but never more than was granted.
    superset = await refresh(env, client, (await again.get_json())["refresh_token"], scope="mcp admin")
    assert superset.status_code == 400
    assert await error_of(superset) == "invalid_scope"


# --- client authentication --------------------------------------------------------------------------


async def confidential_tokens(env: Env, method: str) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    client = await register(env, token_endpoint_auth_method=method)
    verifier = new_token()
    code = await authorize(env, client, verifier)
    return client, {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}, code, verifier


async def test_confidential_client_basic_and_post(env: Env) -> None:
    client, form, _, _ = await confidential_tokens(env, "client_secret_basic")
    via_basic = await post_token(env, form, basic(client["client_id"], client["client_secret"]))
    assert via_basic.status_code == 200, await via_basic.get_data(as_text=True)
    client, form, _, _ = await confidential_tokens(env, "client_secret_post")
    via_post = await post_token(
        env, {**form, "client_id": client["client_id"], "client_secret": client["client_secret"]}
    )
    assert via_post.status_code == 200


async def test_confidential_client_wrong_or_missing_secret(env: Env) -> None:
    client, form, _, _ = await confidential_tokens(env, "client_secret_basic")
    wrong_basic = await post_token(env, form, basic(client["client_id"], "wrong"))
    assert wrong_basic.status_code == 401
    assert await error_of(wrong_basic) == "invalid_client"
    assert wrong_basic.headers["WWW-Authenticate"].startswith("Basic")
    wrong_post = await post_token(env, {**form, "client_id": client["client_id"], "client_secret": "wrong"})
    assert wrong_post.status_code == 401 and await error_of(wrong_post) == "invalid_client"
    missing = await post_token(env, {**form, "client_id": client["client_id"]})
    assert missing.status_code == 401
    garbage = await post_token(env, form, {"Authorization": "Basic !!!not-base64"})
    assert garbage.status_code == 401 and await error_of(garbage) == "invalid_client"
    both = await post_token(
        env, {**form, "client_secret": client["client_secret"]}, basic(client["client_id"], client["client_secret"])
    )
    assert both.status_code == 400 and await error_of(both) == "invalid_request"
    # None of the failures consumed the code: the right credentials still work.
    ok = await post_token(env, form, basic(client["client_id"], client["client_secret"]))
    assert ok.status_code == 200


# --- introspection and revocation -------------------------------------------------------------------


async def test_introspection_requires_credentials_and_ownership(env: Env) -> None:
    owner = await register(env, token_endpoint_auth_method="client_secret_post")
    stranger = await register(env, token_endpoint_auth_method="client_secret_basic")
    tokens = await tokens_for_confidential(env, owner)
    anonymous = await env.client.post("/introspect", form={"token": tokens["access_token"]})
    assert anonymous.status_code == 401 and await error_of(anonymous) == "invalid_client"
    wrong_rs = await introspect(env, tokens["access_token"], ("rs", "nope"))
    assert wrong_rs.status_code == 401
    public = await register(env)
    as_public = await env.client.post(
        "/introspect", form={"token": tokens["access_token"], "client_id": public["client_id"]}
    )
    assert as_public.status_code == 401
    foreign = await introspect(env, tokens["access_token"], (stranger["client_id"], stranger["client_secret"]))
    assert foreign.status_code == 200 and (await foreign.get_json()) == {"active": False}
    own = await env.client.post(
        "/introspect",
        form={
            "token": tokens["access_token"],
            "client_id": owner["client_id"],
            "client_secret": owner["client_secret"],
        },
    )
    assert (await own.get_json())["active"] is True
    assert own.headers["Cache-Control"] == "no-store"
    assert (await (await introspect(env, "garbage")).get_json()) == {"active": False}


async def tokens_for_confidential(env: Env, client: Mapping[str, Any]) -> dict[str, Any]:
    verifier = new_token()
    code = await authorize(env, client, verifier)
    response = await post_token(
        env,
        {"grant_type": "authorization_code", "code": code, "code_verifier": verifier},
        basic(client["client_id"], client["client_secret"]),
    )
    assert response.status_code == 200
    tokens: dict[str, Any] = await response.get_json()
    return tokens


async def test_revocation_requires_ownership(env: Env) -> None:
    owner = await register(env)
    other = await register(env)
    tokens = await tokens_for(env, owner)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        refused = await env.client.post("/revoke", form={"token": token, "client_id": other["client_id"]})
        assert refused.status_code == 400, token
        assert await is_active(env, token)
    anonymous = await env.client.post("/revoke", form={"token": tokens["access_token"]})
    assert anonymous.status_code == 401
    done = await env.client.post("/revoke", form={"token": tokens["access_token"], "client_id": owner["client_id"]})
    assert done.status_code == 200
    assert await done.get_data() == b""
    assert done.headers["Access-Control-Allow-Origin"] == "*"
    assert not await is_active(env, tokens["access_token"])
    assert await is_active(env, tokens["refresh_token"])  # revoking an access token leaves the grant
    await env.client.post("/revoke", form={"token": tokens["refresh_token"], "client_id": owner["client_id"]})
    assert not await is_active(env, tokens["refresh_token"])
    unknown = await env.client.post("/revoke", form={"token": "no-such-token", "client_id": owner["client_id"]})
    assert unknown.status_code == 200  # RFC 7009 sec. 2.2


# --- the token endpoint's HTTP edges ----------------------------------------------------------------


async def test_token_response_is_not_cached(env: Env) -> None:
    client = await register(env)
    verifier = new_token()
    code = await authorize(env, client, verifier)
    response = await exchange(env, client, code, verifier)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    error = await post_token(env, {"grant_type": "authorization_code", "client_id": client["client_id"]})
    assert error.headers["Cache-Control"] == "no-store"


async def test_token_endpoint_rejects_malformed_requests(env: Env) -> None:
    client = await register(env)
    as_json = await env.client.post("/token", json={"grant_type": "refresh_token", "refresh_token": "x"})
    assert as_json.status_code == 415 and await error_of(as_json) == "invalid_request"
    no_type = await env.client.post("/token", data=b"grant_type=refresh_token")
    assert no_type.status_code == 415
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    repeated = await env.client.post(
        "/token", data=b"grant_type=refresh_token&grant_type=authorization_code", headers=form_headers
    )
    assert repeated.status_code == 400 and await error_of(repeated) == "invalid_request"
    bad_utf8 = await env.client.post("/token", data=b"grant_type=%ff%fe", headers=form_headers)
    assert bad_utf8.status_code == 400 and await error_of(bad_utf8) == "invalid_request"
    huge = await env.client.post("/token", data=b"a=" + b"x" * 100_000, headers=form_headers)
    assert huge.status_code == 413 and await error_of(huge) == "invalid_request"
    unsupported = await post_token(env, {"grant_type": "password", "client_id": client["client_id"]})
    assert unsupported.status_code == 400 and await error_of(unsupported) == "unsupported_grant_type"
    missing = await post_token(env, {"grant_type": "authorization_code", "client_id": client["client_id"]})
    assert await error_of(missing) == "invalid_request"


# --- rate limits ------------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after() -> None:
    env = await make_env(per_minute=3)
    form = {"grant_type": "refresh_token", "refresh_token": "x", "client_id": "nobody"}
    statuses = [(await post_token(env, form)).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    limited = await post_token(env, form)
    assert limited.status_code == 429
    assert await error_of(limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    # Another client IP has its own bucket; one behind a trusted proxy is keyed on its forwarded address.
    elsewhere = await env.client.post("/token", form=form, scope_base={"client": ("203.0.113.9", 1234)})
    assert elsewhere.status_code == 401
    proxied = {"X-Forwarded-For": "198.51.100.1, 10.1.1.1"}
    for _ in range(3):
        ok = await env.client.post("/token", form=form, headers=proxied, scope_base={"client": ("10.0.0.2", 1)})
        assert ok.status_code == 401
    blocked = await env.client.post("/token", form=form, headers=proxied, scope_base={"client": ("10.0.0.3", 1)})
    assert blocked.status_code == 429
    # /authorize, visited by a browser, gets a page.
    for _ in range(3):
        await env.client.get("/authorize")
    page = await env.client.get("/authorize")
    assert page.status_code == 429
    assert page.content_type.startswith("text/html") and "Retry-After" in page.headers


def test_client_ip_believes_forwarded_for_only_from_trusted_proxies() -> None:
    limiter = RateLimiter(MemoryKeyValueStore(), 60, ["10.0.0.0/8", "192.0.2.7"])
    assert limiter.client_ip("203.0.113.5", "1.2.3.4") == "203.0.113.5"  # untrusted peer: header ignored
    assert limiter.client_ip("10.0.0.1", "1.2.3.4") == "1.2.3.4"
    assert limiter.client_ip("10.0.0.1", "6.6.6.6, 1.2.3.4, 192.0.2.7") == "1.2.3.4"  # right-most untrusted
    assert limiter.client_ip("10.0.0.1", "10.0.0.5, 10.0.0.9") == "10.0.0.5"  # all trusted: the left-most
    assert limiter.client_ip("10.0.0.1", "garbage, 1.2.3.4") == "1.2.3.4"
    assert limiter.client_ip("10.0.0.1", "1.2.3.4, garbage") == "10.0.0.1"
    assert limiter.client_ip("10.0.0.1", "[2001:db8::1]:443") == "2001:db8::1"
    assert limiter.client_ip("::ffff:10.0.0.1", "1.2.3.4:5678") == "1.2.3.4"
    assert limiter.client_ip("192.0.2.8", "1.2.3.4") == "192.0.2.8"
    assert limiter.bucket_key("token", "2001:db8::1") == limiter.bucket_key("token", "2001:db8::ffff")
    assert limiter.bucket_key("token", "1.2.3.4") == "ratelimit:token:1.2.3.4"


# --- HTML -------------------------------------------------------------------------------------------


async def test_html_is_escaped(env: Env) -> None:
    hostile = "<script>alert(1)</script>"
    client = await register(env, client_name=hostile)
    verifier = new_token()
    params = authorize_params(client, verifier, state='"><script>alert(2)</script>')
    response = await env.client.get("/authorize", query_string=params)
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    idp = await env.client.get(await approve(env, page))
    idp_page = await idp.get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in idp_page
    assert "<script" not in idp_page.lower()


async def test_security_headers_on_every_html_page(env: Env) -> None:
    client = await register(env)
    verifier = new_token()
    consent = await env.client.get("/authorize", query_string=authorize_params(client, verifier))
    idp = await env.client.get(await approve(env, await consent.get_data(as_text=True)))
    error = await env.client.get("/mock-upstream-idp/callback", query_string={"state": "nope", "userId": "a"})
    unknown_client = await env.client.get("/authorize", query_string={"client_id": "nope"})
    for name, response in (("consent", consent), ("idp", idp), ("error", error), ("unknown", unknown_client)):
        assert response.content_type.startswith("text/html"), name
        check_html_headers(response.headers, name)
    for response in (consent, idp):  # their forms end in a redirect to the client
        assert "https://client.example" in response.headers["Content-Security-Policy"]


def check_html_headers(headers: Headers, name: str) -> None:
    for header, value in HTML_HEADERS.items():
        assert headers.get(header) == value, (name, header)
    csp = {d.strip().split(" ", 1)[0]: d.strip() for d in headers["Content-Security-Policy"].split(";")}
    assert csp["default-src"] == "default-src 'none'", name
    assert csp["frame-ancestors"] == "frame-ancestors 'none'", name
    assert csp["base-uri"] == "base-uri 'none'", name
    assert csp["form-action"].startswith("form-action 'self'"), name
    assert "script-src" not in csp, name
