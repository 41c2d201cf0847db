"""Checks every MCP request passes before its body is even read: Host/Origin, media types, size."""

from __future__ import annotations

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
    PayloadTooLarge,
    UnsupportedMediaType,
)

LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _hostname(netloc: str) -> str:
    # "[::1]:3232" -> "::1", "Example.COM:80" -> "example.com"
    parsed = urlsplit(f"//{netloc}")
    return (parsed.hostname or "").lower()


@attrs.frozen
class OriginPolicy:
    """DNS-rebinding protection (transport spec, "Security Warning"): check Host and Origin first."""

    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> OriginPolicy:
        hosts = {_hostname(urlsplit(settings.base_url).netloc), *LOOPBACK_HOSTS}
        hosts.update(_hostname(h) if ":" in h and not h.startswith("[") else h.lower() for h in settings.allowed_hosts)
        origins = {settings.base_origin.lower(), *(o.rstrip("/").lower() for o in settings.allowed_origins)}
        return cls(frozenset(h.strip("[]") for h in hosts), frozenset(origins))

    def check(self, host: str | None, origin: str | None) -> None:
        if host is None or _hostname(host) not in self.allowed_hosts:
            raise MisdirectedHost(f"Host {host!r} is not served here")
        if origin is None:
            return  # not a browser (or a same-origin GET); Host already matched
        normalized = origin.rstrip("/").lower()
        if normalized in self.allowed_origins:
            return
        parsed = urlsplit(normalized)
        if parsed.scheme in ("http", "https") and (parsed.hostname or "") in {h.strip("[]") for h in LOOPBACK_HOSTS}:
            return  # a local tool (the MCP Inspector) on any loopback port
        raise ForbiddenOrigin(f"Origin {origin!r} is not allowed")


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


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
