"""Discovery for the token client (`refserver.oauth.headless`): from an MCP URL to a validated authorization server.

The order is the 2026-07-28 authorization spec's, so the client works against any server, not only ours:

1. An unauthenticated request to the MCP URL; its 401 `WWW-Authenticate` may name the protected resource
   metadata (`resource_metadata`, RFC 9728 sec. 5.1) and the scope to ask for.
2. Protected resource metadata from that URL, else the path-aware well-known URL, else the root one
   (RFC 9728 sec. 3.1); its `resource` must name the MCP URL.
3. Authorization server metadata at the RFC 8414 and OpenID Connect Discovery locations in the spec's priority
   order (`metadata_urls`); the first JSON 200 wins, its `issuer` must equal the issuer exactly (RFC 8414
   sec. 3.3), and it must list `S256` (PKCE is not optional, so an authorization server that does not say it
   supports S256 is refused).
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import httpx

PROTECTED_RESOURCE_WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"
OAUTH_WELL_KNOWN: Final = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN: Final = "/.well-known/openid-configuration"
_PROBE_HEADERS: Final = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
_PROBE_BODY: Final = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
_BEARER: Final = re.compile(r"(?:^|[\s,])Bearer(?=\s|$)", re.IGNORECASE)
_AUTH_PARAM: Final = re.compile(r'\s*,?\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]+)\s*')


class FlowError(Exception):
    """The flow stopped: the message says at which step and what the server answered."""


@attrs.frozen
class Challenge:
    """What a 401's `Bearer` challenge tells a client without a token."""

    resource_metadata: str | None = None
    scope: str | None = None


@attrs.frozen
class Discovery:
    resource: str
    issuer: str
    metadata: dict[str, Any]
    challenge: Challenge = Challenge()
    scopes_supported: tuple[str, ...] = ()
    """The protected resource metadata's `scopes_supported` (empty when it has none)."""


def parse_challenge(header: str) -> Challenge:
    """The `resource_metadata` and `scope` of the `Bearer` challenge in a `WWW-Authenticate` value (RFC 6750
    sec. 3; other schemes' challenges in the same header are skipped)."""
    found = _BEARER.search(header)
    if found is None:
        return Challenge()
    params: dict[str, str] = {}
    position = found.end()
    while (param := _AUTH_PARAM.match(header, position)) is not None:
        name, value = param.group(1).lower(), param.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(name, value)
        position = param.end()
    return Challenge(resource_metadata=params.get("resource_metadata") or None, scope=params.get("scope") or None)


def protected_resource_metadata_urls(mcp_url: str, challenge: Challenge) -> list[str]:
    """Where to look for the protected resource metadata, in order: the challenge's URL, then RFC 9728's
    path-aware well-known URL, then the root one."""
    parts = urlsplit(mcp_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    urls = [challenge.resource_metadata] if challenge.resource_metadata else []
    if path:
        urls.append(f"{origin}{PROTECTED_RESOURCE_WELL_KNOWN}{path}")
    urls.append(f"{origin}{PROTECTED_RESOURCE_WELL_KNOWN}")
    return list(dict.fromkeys(urls))


def metadata_urls(issuer: str) -> list[str]:
    """Where to look for an issuer's metadata, in the spec's priority order.

    With a path (`https://as/tenant1`): RFC 8414's path-inserted URL, OpenID Connect Discovery path-inserted,
    then OpenID Connect Discovery appended. Without: RFC 8414's, then OpenID Connect Discovery's. A trailing
    slash on the issuer changes no URL (the metadata's `issuer` is still compared with the issuer as given).
    """
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [f"{origin}{OAUTH_WELL_KNOWN}", f"{origin}{OIDC_WELL_KNOWN}"]
    return [f"{origin}{OAUTH_WELL_KNOWN}{path}", f"{origin}{OIDC_WELL_KNOWN}{path}", f"{origin}{path}{OIDC_WELL_KNOWN}"]


def resource_matches(resource: str, mcp_url: str) -> bool:
    """Whether protected resource metadata naming `resource` is about `mcp_url`: the same origin (scheme and
    host compared case-insensitively), and `resource`'s path is the MCP URL's path or a parent of it."""
    named, wanted = urlsplit(resource), urlsplit(mcp_url)
    if (named.scheme.lower(), named.netloc.lower()) != (wanted.scheme.lower(), wanted.netloc.lower()):
        return False
    named_path, wanted_path = named.path.rstrip("/"), wanted.path.rstrip("/")
    return wanted_path == named_path or wanted_path.startswith(named_path + "/")


async def probe_challenge(http: httpx.AsyncClient, mcp_url: str) -> Challenge:
    """Ask the MCP URL without a token; a 401 carries the challenge (anything else carries nothing)."""
    response = await http.post(mcp_url, json=_PROBE_BODY, headers=_PROBE_HEADERS)
    if response.status_code != 401:
        return Challenge()
    return parse_challenge(response.headers.get("WWW-Authenticate", ""))


async def discover(http: httpx.AsyncClient, mcp_url: str) -> Discovery:
    challenge = await probe_challenge(http, mcp_url)
    document = await _first_json(
        http, protected_resource_metadata_urls(mcp_url, challenge), "protected resource metadata"
    )
    resource = document.get("resource")
    if not isinstance(resource, str) or not resource_matches(resource, mcp_url):
        raise FlowError(f"protected resource metadata names the resource {resource!r}, not {mcp_url!r}")
    servers = document.get("authorization_servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise FlowError("protected resource metadata names no authorization server")
    issuer = servers[0]
    metadata = await _first_json(http, metadata_urls(issuer), "authorization server metadata")
    if metadata.get("issuer") != issuer:
        raise FlowError(f"issuer mismatch: {metadata.get('issuer')!r} != {issuer!r}")
    methods = metadata.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        raise FlowError(f"the authorization server {issuer} does not list S256 in code_challenge_methods_supported")
    scopes = document.get("scopes_supported")
    return Discovery(
        resource=resource,
        issuer=issuer,
        metadata=metadata,
        challenge=challenge,
        scopes_supported=tuple(s for s in scopes if isinstance(s, str)) if isinstance(scopes, list) else (),
    )


def select_scope(discovery: Discovery, explicit: str | None = None) -> str | None:
    """The scope to ask for: the caller's, else the challenge's, else every scope the protected resource
    metadata lists; None (no `scope` parameter) when there is none of these."""
    if explicit:
        return explicit
    if discovery.challenge.scope:
        return discovery.challenge.scope
    return " ".join(discovery.scopes_supported) or None


async def _first_json(http: httpx.AsyncClient, urls: list[str], step: str) -> dict[str, Any]:
    """The first of `urls` answering 200 with a JSON object; FlowError (quoting the last answer) when none does."""
    response: httpx.Response | None = None
    for url in urls:
        response = await http.get(url, headers={"Accept": "application/json"})
        if response.status_code != 200:
            continue
        try:
            document = response.json()
        except ValueError:
            continue
        if isinstance(document, dict):
            return document
    assert response is not None  # urls is never empty
    expect(response, 200, step)
    raise FlowError(f"{step}: no JSON object at {', '.join(urls)}")


def expect(response: httpx.Response, status: int, step: str) -> None:
    if response.status_code != status:
        text = response.text
        if "html" in response.headers.get("content-type", ""):
            # An error page: keep its words, not its markup and stylesheet.
            text = re.sub(r"\s+", " ", re.sub(r"(?s)<style.*?</style>|<[^>]+>", " ", text)).strip()
        raise FlowError(f"{step}: expected HTTP {status}, got {response.status_code}: {text[:300]}")
