"""Checks every MCP request passes before its body is even read: Host/Origin, media types; the Quart body reader."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

import attrs
from quart import Request

from refserver.config import Settings
from refserver.errors import (
    ForbiddenOrigin,
    MisdirectedHost,
    NotAcceptable,
    UnsupportedMediaType,
)
from refserver.request_body import read_bounded_body

LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})

_REG_NAME: Final = re.compile(r"[a-z0-9._~-]+")
_IPV6: Final = re.compile(r"[0-9a-f:.]+")
_PORT: Final = re.compile(r"(?::[0-9]*)?")


def _hostname(authority: str) -> str | None:
    """The lowercase host of `host[:port]` (RFC 9110 Host), brackets stripped; None if malformed.

    "[::1]:3232" -> "::1", "Example.COM:80" -> "example.com". Strict on purpose: a lenient URL
    parser would read "evil.example@127.0.0.1" (userinfo) or "127.0.0.1/x" as 127.0.0.1.
    """
    value = authority.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        host, rest = (value[1:end], value[end + 1 :]) if end > 0 else ("", "")
        if not _IPV6.fullmatch(host):
            return None
    else:
        host, sep, port = value.partition(":")
        rest = sep + port
        if not _REG_NAME.fullmatch(host):
            return None
    return host if _PORT.fullmatch(rest) else None


def _configured_host(entry: str) -> str | None:
    """An ALLOWED_HOSTS entry: "name", "name:port", "[v6]", "[v6]:port" or a bare IPv6 address."""
    entry = entry.strip().lower()
    if entry.count(":") > 1 and not entry.startswith("["):
        return entry if _IPV6.fullmatch(entry) else None
    return _hostname(entry)


@attrs.frozen
class OriginPolicy:
    """DNS-rebinding protection (transport spec, "Security Warning"): check Host and Origin first."""

    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> OriginPolicy:
        hosts = {(urlsplit(settings.base_url).hostname or "").lower(), *LOOPBACK_HOSTS}
        hosts.update(h for h in map(_configured_host, settings.allowed_hosts) if h)
        origins = {settings.base_origin.lower(), *(o.rstrip("/").lower() for o in settings.allowed_origins)}
        return cls(frozenset(h for h in hosts if h), frozenset(origins))

    def check(self, host: str | None, origin: str | None) -> None:
        if host is None or _hostname(host) not in self.allowed_hosts:
            raise MisdirectedHost(f"Host {host!r} is not served here")
        if origin is not None and not self.allows_origin(origin):
            raise ForbiddenOrigin(f"Origin {origin!r} is not allowed")
        # No Origin: not a browser (or a same-origin GET); Host already matched.

    def allows_origin(self, origin: str) -> bool:
        normalized = origin.rstrip("/").lower()
        if normalized in self.allowed_origins:
            return True
        scheme, sep, authority = normalized.partition("://")
        # A local tool (the MCP Inspector) on any loopback port.
        return bool(sep and scheme in ("http", "https") and _hostname(authority) in LOOPBACK_HOSTS)


def _media_types(header: str | None) -> list[str]:
    if not header:
        return []
    return [part.split(";", 1)[0].strip().lower() for part in header.split(",")]


def _accepts(types_: Iterable[str], wanted: str) -> bool:
    major = wanted.split("/", 1)[0]
    return any(t in (wanted, "*/*", f"{major}/*") for t in types_)


def check_post_accept(header: str | None) -> None:
    """A POST must accept both a JSON body and an SSE stream (the server picks per request)."""
    types_ = _media_types(header)
    if not (_accepts(types_, "application/json") and _accepts(types_, "text/event-stream")):
        raise NotAcceptable("Not Acceptable: Accept must include application/json and text/event-stream")


def check_sse_accept(header: str | None) -> None:
    if not _accepts(_media_types(header), "text/event-stream"):
        raise NotAcceptable("Not Acceptable: Accept must include text/event-stream")


def check_json_content_type(header: str | None) -> None:
    types_ = _media_types(header)
    if not types_ or types_[0] != "application/json":
        raise UnsupportedMediaType("Unsupported Media Type: Content-Type must be application/json")


async def read_body(request: Request, limit: int, time_limit: float) -> bytes:
    """Read a Quart request's body, refused with 413 beyond `limit` bytes and 408 after `time_limit` seconds."""
    return await read_bounded_body(
        request.body, request.headers.get("Content-Length"), limit=limit, time_limit=time_limit
    )
