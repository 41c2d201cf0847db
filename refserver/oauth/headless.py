"""The real OAuth flow, driven over HTTP without a browser (for the developer token command and tests).

It does what a client and a person would: discovery (RFC 9728, then RFC 8414), dynamic registration,
PKCE, the authorization request, consent, the mock identity provider, and the token exchange. Nothing
is shortcut on the server side, so it works against any instance whatever its storage.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import attrs
import httpx

from refserver.oauth.crypto import s256_challenge

LOOPBACK_REDIRECT: Final = "http://127.0.0.1/callback"
"""Registered redirect URI: loopback, so any port is accepted (RFC 8252) and nothing needs to listen."""
_REQUEST_ID: Final = re.compile(r'name="request_id" value="([^"]+)"')


class FlowError(Exception):
    """The flow stopped: the message says at which step and what the server answered."""


@attrs.frozen
class Discovery:
    resource: str
    issuer: str
    metadata: dict[str, Any]


async def discover(http: httpx.AsyncClient, mcp_url: str) -> Discovery:
    parts = urlsplit(mcp_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    response = await http.get(f"{origin}/.well-known/oauth-protected-resource{parts.path}")
    if response.status_code != 200:
        response = await http.get(f"{origin}/.well-known/oauth-protected-resource")
    _expect(response, 200, "protected resource metadata")
    document = response.json()
    issuer = document["authorization_servers"][0]
    metadata = await http.get(f"{issuer.rstrip('/')}/.well-known/oauth-authorization-server")
    _expect(metadata, 200, "authorization server metadata")
    as_metadata = metadata.json()
    if as_metadata.get("issuer") != issuer:
        raise FlowError(f"issuer mismatch: {as_metadata.get('issuer')!r} != {issuer!r}")
    return Discovery(resource=document["resource"], issuer=issuer, metadata=as_metadata)


async def register(http: httpx.AsyncClient, discovery: Discovery, *, client_name: str) -> dict[str, Any]:
    response = await http.post(
        discovery.metadata["registration_endpoint"],
        json={
            "client_name": client_name,
            "redirect_uris": [LOOPBACK_REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        },
    )
    _expect(response, 201, "registration")
    client: dict[str, Any] = response.json()
    return client


async def act_as_person(http: httpx.AsyncClient, authorize_url: str, *, user: str, approve: bool = True) -> str:
    """Open the authorization URL, answer the consent page, pick `user` at the identity provider.

    Returns the URL the person's browser ends on: the client's redirect URI with code (or error).
    """
    page = await http.get(authorize_url)
    if page.status_code == 302:
        return page.headers["Location"]  # the server refused the request by redirecting back
    _expect(page, 200, "authorization request")
    found = _REQUEST_ID.search(page.text)
    if found is None:
        raise FlowError("no consent form on the authorization page")
    consent = await http.post(
        urljoin(authorize_url, "/authorize/consent"),
        data={"request_id": found.group(1), "decision": "approve" if approve else "deny"},
    )
    _expect(consent, 302, "consent")
    location = urljoin(authorize_url, consent.headers["Location"])
    if not approve:
        return location
    idp_page = await http.get(location)
    _expect(idp_page, 200, "identity provider page")
    state = parse_qs(urlsplit(location).query)["state"][0]
    callback = await http.get(
        urljoin(authorize_url, "/mock-upstream-idp/callback"), params={"state": state, "userId": user}
    )
    _expect(callback, 302, "identity provider callback")
    return callback.headers["Location"]


async def obtain_tokens(
    http: httpx.AsyncClient, mcp_url: str, *, user: str, scope: str | None = None, client_name: str = "refserver CLI"
) -> dict[str, Any]:
    """The whole flow for `user`; returns the token response (access_token, refresh_token, ...)."""
    discovery = await discover(http, mcp_url)
    client = await register(http, discovery, client_name=client_name)
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": LOOPBACK_REDIRECT,
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
        "state": state,
        "resource": discovery.resource,
    }
    if scope:
        query["scope"] = scope
    final_url = await act_as_person(
        http, f"{discovery.metadata['authorization_endpoint']}?{urlencode(query)}", user=user
    )
    answer = {key: values[0] for key, values in parse_qs(urlsplit(final_url).query).items()}
    if "error" in answer:
        raise FlowError(f"authorization refused: {answer['error']}: {answer.get('error_description', '')}")
    if answer.get("state") != state or answer.get("iss") != discovery.issuer:
        raise FlowError("state or issuer of the authorization response does not match (RFC 9207)")
    response = await http.post(
        discovery.metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": LOOPBACK_REDIRECT,
            "client_id": client["client_id"],
            "code_verifier": verifier,
            "resource": discovery.resource,
        },
    )
    _expect(response, 200, "token exchange")
    tokens: dict[str, Any] = response.json()
    tokens["client_id"] = client["client_id"]
    return tokens


def _expect(response: httpx.Response, status: int, step: str) -> None:
    if response.status_code != status:
        text = response.text
        if "html" in response.headers.get("content-type", ""):
            # An error page: keep its words, not its markup and stylesheet.
            text = re.sub(r"\s+", " ", re.sub(r"(?s)<style.*?</style>|<[^>]+>", " ", text)).strip()
        raise FlowError(f"{step}: expected HTTP {status}, got {response.status_code}: {text[:300]}")
