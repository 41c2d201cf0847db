"""The real OAuth flow, driven over HTTP without a browser (for the developer token command and tests).

It does what a client and a person would: discovery (`refserver.oauth.token_client_discovery`: the 401
challenge, RFC 9728, then RFC 8414 or OpenID Connect Discovery), a client id (pre-registered, a Client ID
Metadata Document URL, or dynamic registration), PKCE, the authorization request, consent, the mock identity
provider, the RFC 9207 `iss` check, and the token exchange. Nothing is shortcut on the server side, so it works
against any instance whatever its storage, and the client side follows the spec, so it works against any
compliant authorization server whose sign-in page is ours or redirects straight back.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import attrs
import httpx

from refserver.oauth.crypto import s256_challenge
from refserver.oauth.token_client_discovery import Discovery, FlowError, discover, expect, select_scope

__all__ = [
    "LOOPBACK_REDIRECT",
    "ClientCredentials",
    "Discovery",
    "FlowError",
    "IssuerCredentials",
    "act_as_person",
    "discover",
    "obtain_tokens",
    "register",
]

LOOPBACK_REDIRECT: Final = "http://127.0.0.1/callback"
"""Registered redirect URI: loopback, so any port is accepted (RFC 8252) and nothing needs to listen."""
_REQUEST_ID: Final = re.compile(r'name="request_id" value="([^"]+)"')


@attrs.frozen
class ClientCredentials:
    client_id: str
    client_secret: str | None = None


class IssuerCredentials:
    """Client credentials from dynamic registration, keyed by the issuer that issued them (SEP-2352): a record
    is only ever reused with, and sent to, that same issuer. In memory, or kept in a JSON file (mode 0600)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._records: dict[str, ClientCredentials] = {}
        if path is not None and path.exists():
            document = json.loads(path.read_text())
            if not isinstance(document, dict):
                raise ValueError(f"{path}: expected a JSON object of issuer -> client credentials")
            for issuer, record in document.items():
                if isinstance(record, dict) and isinstance(record.get("client_id"), str):
                    secret = record.get("client_secret")
                    self._records[issuer] = ClientCredentials(
                        record["client_id"], secret if isinstance(secret, str) else None
                    )

    def get(self, issuer: str) -> ClientCredentials | None:
        return self._records.get(issuer)

    def put(self, issuer: str, credentials: ClientCredentials) -> None:
        self._records[issuer] = credentials
        self._save()

    def forget(self, issuer: str) -> None:
        if self._records.pop(issuer, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        document = {
            issuer: attrs.asdict(record, filter=lambda _, v: v is not None) for issuer, record in self._records.items()
        }
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        # Created 0600 before anything is written: a client secret is never readable by others, not even briefly.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(document, file, indent=2, sort_keys=True)
        os.replace(temporary, self.path)


class _UnknownClient(FlowError):
    """The authorization server does not know a remembered client id."""


async def register(http: httpx.AsyncClient, discovery: Discovery, *, client_name: str) -> dict[str, Any]:
    endpoint = discovery.metadata.get("registration_endpoint")
    if not isinstance(endpoint, str):
        raise FlowError(
            f"the authorization server {discovery.issuer} has no registration endpoint: pass a pre-registered "
            "client id (--client-id) or a client metadata document URL it accepts (--client-metadata-url)"
        )
    response = await http.post(
        endpoint,
        json={
            "client_name": client_name,
            "redirect_uris": [LOOPBACK_REDIRECT],
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        },
    )
    expect(response, 201, "registration")
    client: dict[str, Any] = response.json()
    return client


async def act_as_person(http: httpx.AsyncClient, authorize_url: str, *, user: str, approve: bool = True) -> str:
    """Open the authorization URL, answer the consent page, pick `user` at the identity provider.

    Returns the URL the person's browser ends on: the client's redirect URI with code (or error).
    """
    page = await http.get(authorize_url)
    if page.status_code == 302:
        return page.headers["Location"]  # refused, or an authorization server that asks nothing, redirects back
    expect(page, 200, "authorization request")
    found = _REQUEST_ID.search(page.text)
    if found is None:
        raise FlowError("no consent form on the authorization page")
    consent = await http.post(
        urljoin(authorize_url, "/authorize/consent"),
        data={"request_id": found.group(1), "decision": "approve" if approve else "deny"},
    )
    expect(consent, 302, "consent")
    location = urljoin(authorize_url, consent.headers["Location"])
    if not approve:
        return location
    idp_page = await http.get(location)
    expect(idp_page, 200, "identity provider page")
    state = parse_qs(urlsplit(location).query)["state"][0]
    callback = await http.get(
        urljoin(authorize_url, "/mock-upstream-idp/callback"), params={"state": state, "userId": user}
    )
    expect(callback, 302, "identity provider callback")
    return callback.headers["Location"]


async def obtain_tokens(
    http: httpx.AsyncClient,
    mcp_url: str,
    *,
    user: str,
    scope: str | None = None,
    client_name: str = "refserver CLI",
    client_id: str | None = None,
    client_secret: str | None = None,
    client_metadata_url: str | None = None,
    credentials: IssuerCredentials | None = None,
) -> dict[str, Any]:
    """The whole flow for `user`; returns the token response (access_token, refresh_token, ...) plus client_id.

    The client is, in the spec's order of preference: `client_id` (pre-registered, with `client_secret` for a
    confidential one), `client_metadata_url` when the authorization server accepts metadata documents, a
    registration `credentials` holds for this issuer, else a new dynamic registration (remembered there).
    `scope` wins over the scope the server's challenge or metadata suggest (`select_scope`).
    """
    discovery = await discover(http, mcp_url)
    credentials = credentials if credentials is not None else IssuerCredentials()
    chosen_scope = select_scope(discovery, scope)
    if client_id is not None:
        client = ClientCredentials(client_id, client_secret)
        return await _authorize_and_redeem(http, discovery, client, user=user, scope=chosen_scope)
    if client_metadata_url is not None and discovery.metadata.get("client_id_metadata_document_supported") is True:
        client = ClientCredentials(client_metadata_url)
        return await _authorize_and_redeem(http, discovery, client, user=user, scope=chosen_scope)
    remembered = credentials.get(discovery.issuer)
    if remembered is not None:
        try:
            return await _authorize_and_redeem(http, discovery, remembered, user=user, scope=chosen_scope)
        except _UnknownClient:
            credentials.forget(discovery.issuer)  # the server forgot it (say, an in-memory store restarted)
    registered = await register(http, discovery, client_name=client_name)
    client = ClientCredentials(registered["client_id"], registered.get("client_secret"))
    credentials.put(discovery.issuer, client)
    return await _authorize_and_redeem(http, discovery, client, user=user, scope=chosen_scope)


async def _authorize_and_redeem(
    http: httpx.AsyncClient, discovery: Discovery, client: ClientCredentials, *, user: str, scope: str | None
) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": LOOPBACK_REDIRECT,
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
        "state": state,
        "resource": discovery.resource,
    }
    if scope:
        query["scope"] = scope
    try:
        final_url = await act_as_person(
            http, f"{discovery.metadata['authorization_endpoint']}?{urlencode(query)}", user=user
        )
    except FlowError as exc:
        # A 4xx page (not a redirect back): the server does not know this client id, or will not use it.
        if str(exc).startswith("authorization request: expected HTTP 200, got 4"):
            raise _UnknownClient(str(exc)) from exc
        raise
    answer = {key: values[0] for key, values in parse_qs(urlsplit(final_url).query).items()}
    check_issuer(discovery, answer.get("iss"))
    if answer.get("state") != state:
        raise FlowError("the state of the authorization response does not match the request's")
    if "error" in answer:
        raise FlowError(f"authorization refused: {answer['error']}: {answer.get('error_description', '')}")
    form = {
        "grant_type": "authorization_code",
        "code": answer["code"],
        "redirect_uri": LOOPBACK_REDIRECT,
        "code_verifier": verifier,
        "resource": discovery.resource,
    }
    response = await http.post(
        discovery.metadata["token_endpoint"],
        data=form | _client_authentication(discovery, client),
        headers=_basic(discovery, client),
    )
    expect(response, 200, "token exchange")
    tokens: dict[str, Any] = response.json()
    tokens["client_id"] = client.client_id
    return tokens


def check_issuer(discovery: Discovery, iss: str | None) -> None:
    """RFC 9207 sec. 2.4, before the code goes anywhere: a present `iss` must equal the issuer exactly (no
    normalisation); an absent one is an error when the metadata promised it."""
    if iss is None:
        if discovery.metadata.get("authorization_response_iss_parameter_supported") is True:
            raise FlowError(f"the authorization response has no iss, though {discovery.issuer} promises one (RFC 9207)")
        return
    if iss != discovery.issuer:
        # RFC 9207: a response from another issuer is not acted on, its error not even shown.
        raise FlowError(f"the authorization response comes from issuer {iss!r}, not {discovery.issuer!r} (RFC 9207)")


def token_endpoint_auth_method(discovery: Discovery, client: ClientCredentials) -> str:
    """`none` for a public client; for a secret, client_secret_basic unless the metadata offers only _post
    (RFC 8414 sec. 2: an absent list means client_secret_basic)."""
    if client.client_secret is None:
        return "none"
    offered = discovery.metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    for method in ("client_secret_basic", "client_secret_post"):
        if method in offered:
            return method
    raise FlowError(f"the authorization server {discovery.issuer} accepts no client secret at its token endpoint")


def _client_authentication(discovery: Discovery, client: ClientCredentials) -> dict[str, str]:
    method = token_endpoint_auth_method(discovery, client)
    if method == "client_secret_basic":
        return {}
    if method == "client_secret_post":
        return {"client_id": client.client_id, "client_secret": client.client_secret or ""}
    return {"client_id": client.client_id}


def _basic(discovery: Discovery, client: ClientCredentials) -> dict[str, str]:
    if token_endpoint_auth_method(discovery, client) != "client_secret_basic":
        return {}
    # RFC 6749 sec. 2.3.1: each part form-encoded before joining.
    pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret or '', safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
