"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a client whose `client_id` is an
https URL, whose metadata is the JSON document at that URL, fetched by us.

Fetching a URL a stranger chose is a server-side request forgery risk, so the fetch is guarded:

- the URL: https (http only to loopback, and only with `REFSERVER_OAUTH_CIMD_ALLOW_LOOPBACK`), a path, no
  fragment, no user info, no dot segments (the draft's rules);
- the address: the host is resolved here, within the fetch's time limit, and EVERY address it resolves to must
  be a public unicast one (no loopback, private, shared, link-local - the cloud metadata service lives there -,
  multicast, reserved or documentation range, nor an IPv6 form that embeds one); the connection is then made to
  that checked address (TLS still verifies the certificate for the host name), so a second DNS answer cannot
  send it elsewhere;
- the answer: no redirect is followed, at most `MAX_DOCUMENT_BYTES` are read (reading stops there), the whole
  exchange is bounded by `FETCH_TIMEOUT`, and only a JSON object whose `client_id` is exactly the URL is taken.

A good document is cached in the OAuth key-value store (memory, or Redis shared by every instance) for as long
as its `Cache-Control` allows, never longer than `MAX_CACHE_SECONDS`; `no-store` / `no-cache` are honoured.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias
from urllib.parse import SplitResult, urlsplit

import httpx
import trio

from refserver.backend.kv import KeyValueStore
from refserver.errors import OAuthError
from refserver.oauth.crypto import token_hash
from refserver.oauth.models import GRANT_TYPES, Client, dump, load
from refserver.oauth.redirects import LOOPBACK_REDIRECT_HOSTS, check_redirect_uris

logger = logging.getLogger(__name__)

FETCH_TIMEOUT: Final = 5.0
"""Seconds for resolving, connecting and reading a document, all together."""
MAX_DOCUMENT_BYTES: Final = 16 * 1024
"""A client's metadata is a few hundred bytes; the draft suggests limits of this order (5 KB)."""
MAX_CACHE_SECONDS: Final = 24 * 3600.0
"""However long `Cache-Control` says, a document is fetched again at least once a day."""
DEFAULT_CACHE_SECONDS: Final = 300.0
"""A document without caching headers is reused for five minutes."""
MAX_CLIENT_NAME: Final = 200
MAX_REDIRECT_URIS: Final = 10

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) -> the addresses it resolves to."""

_FORBIDDEN_NETWORKS: Final = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
"""On top of what `ipaddress` calls non-global: spelled out, so a reviewer need not trust a library's table."""

_CACHE_DIRECTIVE: Final = re.compile(r"\s*([A-Za-z-]+)\s*(?:=\s*\"?([^\",]*)\"?)?\s*")


class ClientDocumentError(Exception):
    """Why a URL client id cannot be used (shown to the person at /authorize, `invalid_client` at /token)."""


def embedded_addresses(address: Address) -> list[Address]:
    """The address, and any IPv4 address an IPv6 form carries (mapped, 6to4, Teredo), each to be checked."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        for inner in (address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None):
            if inner is not None:
                found.append(inner)
    return found


def address_allowed(address: Address, *, allow_loopback: bool) -> bool:
    """Whether a document may be fetched from `address` (loopback only when development allows it)."""
    for candidate in embedded_addresses(address):
        if allow_loopback and candidate.is_loopback:
            continue
        if not candidate.is_global or candidate.is_multicast:
            return False
        if any(candidate in network for network in _FORBIDDEN_NETWORKS if network.version == candidate.version):
            return False
    return True


def is_document_url(client_id: str) -> bool:
    """A client id that names a metadata document (everything else is a registered or pre-registered id)."""
    return client_id.startswith(("https://", "http://"))


def check_document_url(url: str, *, allow_loopback: bool) -> SplitResult:
    """The draft's rules for a client id URL; raises ClientDocumentError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ClientDocumentError(f"the client id is not a valid URL: {exc}") from None
    host = parts.hostname or ""
    loopback_http = parts.scheme == "http" and host in LOOPBACK_REDIRECT_HOSTS
    if parts.scheme != "https" and not (allow_loopback and loopback_http):
        raise ClientDocumentError("a client id URL must use https")
    if not host or parts.username is not None or parts.password is not None:
        raise ClientDocumentError("a client id URL must name a host and no user information")
    if not parts.path or parts.path == "/":
        raise ClientDocumentError("a client id URL must have a path")
    if parts.fragment or "#" in url:
        raise ClientDocumentError("a client id URL must not have a fragment")
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        raise ClientDocumentError("a client id URL must not have dot segments")
    if port == 0:
        raise ClientDocumentError("a client id URL must not use port 0")
    return parts


def cache_seconds(cache_control: str | None) -> float:
    """How long a document may be reused, from its `Cache-Control` (0: not at all)."""
    if cache_control is None:
        return DEFAULT_CACHE_SECONDS
    directives = {
        match.group(1).lower(): match.group(2) for match in _CACHE_DIRECTIVE.finditer(cache_control) if match.group(1)
    }
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    max_age = directives.get("max-age")
    if max_age is None:
        return DEFAULT_CACHE_SECONDS
    try:
        return max(0.0, min(float(int(max_age)), MAX_CACHE_SECONDS))
    except ValueError:
        return 0.0  # a malformed max-age is treated as stale (RFC 9111 sec. 4.2.1)


async def resolve_with_dns(host: str, port: int) -> Sequence[str]:
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class ClientDocuments:
    """Turns a URL client id into a `Client` (public, `token_endpoint_auth_method: none`), fetched and cached."""

    def __init__(
        self,
        *,
        kv: KeyValueStore,
        scopes_supported: Iterable[str],
        allow_loopback: bool = False,
        resolver: Resolver = resolve_with_dns,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self._scopes_supported = tuple(scopes_supported)
        self._allow_loopback = allow_loopback
        self._resolver = resolver
        self._transport = transport
        self._clock = clock
        self.fetches = 0
        """Documents fetched over the network (not from the cache): what the tests and metrics look at."""

    async def client(self, url: str) -> Client:
        parts = check_document_url(url, allow_loopback=self._allow_loopback)
        key = f"oauth:cimd:{token_hash(url)}"
        cached = await self._kv.get(key)
        if cached is not None:
            return load(Client, cached)
        body, cache_control = await self._fetch(url, parts)
        client = self._client_from(url, body)
        ttl = cache_seconds(cache_control)
        if ttl > 0:
            await self._kv.set(key, dump(client), ttl)
        return client

    async def _addresses(self, host: str, port: int) -> list[Address]:
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            try:
                resolved = await self._resolver(host, port)
            except OSError as exc:
                raise ClientDocumentError(f"the client id's host does not resolve: {exc}") from None
            addresses = [ipaddress.ip_address(raw.split("%", 1)[0]) for raw in resolved]
        else:
            addresses = [literal]
        if not addresses:
            raise ClientDocumentError("the client id's host does not resolve")
        refused = [str(a) for a in addresses if not address_allowed(a, allow_loopback=self._allow_loopback)]
        if refused:
            raise ClientDocumentError(f"the client id's host resolves to an address we do not fetch from: {refused[0]}")
        return addresses

    async def _fetch(self, url: str, parts: SplitResult) -> tuple[bytes, str | None]:
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with trio.fail_after(FETCH_TIMEOUT):
                address = (await self._addresses(host, port))[0]
                self.fetches += 1
                return await self._get_pinned(url, parts, address, port)
        except trio.TooSlowError:
            raise ClientDocumentError(
                f"the client's metadata document did not arrive within {FETCH_TIMEOUT:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise ClientDocumentError(f"the client's metadata document could not be fetched: {exc}") from None

    async def _get_pinned(self, url: str, parts: SplitResult, address: Address, port: int) -> tuple[bytes, str | None]:
        """GET the document from the checked address; the Host header and TLS name stay the URL's host."""
        dialled = f"[{address}]" if address.version == 6 else str(address)
        target = parts._replace(netloc=f"{dialled}:{port}").geturl()
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        async with (
            httpx.AsyncClient(
                transport=self._transport, follow_redirects=False, trust_env=False, timeout=FETCH_TIMEOUT
            ) as http,
            http.stream(
                "GET",
                target,
                headers={"Host": parts.netloc.rpartition("@")[2], "Accept": "application/json"},
                extensions=extensions,
            ) as response,
        ):
            if 300 <= response.status_code < 400:
                raise ClientDocumentError("the client's metadata URL redirects; redirects are not followed")
            if response.status_code != 200:
                raise ClientDocumentError(f"the client's metadata URL answered {response.status_code}")
            media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise ClientDocumentError("the client's metadata document is not JSON (Content-Type)")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ClientDocumentError(
                        f"the client's metadata document is larger than {MAX_DOCUMENT_BYTES} bytes"
                    )
            return bytes(body), response.headers.get("Cache-Control")

    def _client_from(self, url: str, body: bytes) -> Client:
        try:
            document = json.loads(body)
        except ValueError:
            raise ClientDocumentError("the client's metadata document is not valid JSON") from None
        if not isinstance(document, dict):
            raise ClientDocumentError("the client's metadata document is not a JSON object")
        if document.get("client_id") != url:
            raise ClientDocumentError("the metadata document's client_id is not the URL it was fetched from")
        try:
            return self._validated(url, document)
        except OAuthError as exc:
            raise ClientDocumentError(f"the client's metadata document is invalid: {exc.message}") from None

    def _validated(self, url: str, document: Mapping[str, Any]) -> Client:
        name = document.get("client_name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_CLIENT_NAME:
            raise OAuthError("invalid_client_metadata", f"client_name must be a string of 1-{MAX_CLIENT_NAME}")
        redirect_uris = document.get("redirect_uris")
        if not isinstance(redirect_uris, list) or not 0 < len(redirect_uris) <= MAX_REDIRECT_URIS:
            raise OAuthError("invalid_client_metadata", f"redirect_uris must list 1-{MAX_REDIRECT_URIS} URIs")
        application_type = check_redirect_uris(redirect_uris, document.get("application_type"))
        if document.get("token_endpoint_auth_method", "none") != "none":
            # private_key_jwt would need the client's JWKS; only public clients are taken by URL here.
            raise OAuthError("invalid_client_metadata", 'token_endpoint_auth_method must be "none"')
        grant_types = document.get("grant_types", ["authorization_code"])
        if not isinstance(grant_types, list) or not grant_types or not set(grant_types) <= set(GRANT_TYPES):
            raise OAuthError("invalid_client_metadata", f"grant_types must be a subset of {list(GRANT_TYPES)}")
        if document.get("response_types", ["code"]) != ["code"]:
            raise OAuthError("invalid_client_metadata", 'response_types must be ["code"]')
        scope = document.get("scope") or " ".join(self._scopes_supported)
        if not isinstance(scope, str) or not set(scope.split()) <= set(self._scopes_supported):
            raise OAuthError("invalid_client_metadata", f"scope must use only {' '.join(self._scopes_supported)}")
        return Client(
            client_id=url,
            client_name=name.strip(),
            redirect_uris=tuple(redirect_uris),
            token_endpoint_auth_method="none",
            grant_types=tuple(grant_types),
            scope=scope,
            secret_hash=None,
            issued_at=int(self._clock()),
            application_type=application_type,
        )
