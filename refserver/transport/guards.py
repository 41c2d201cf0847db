"""Checks every MCP request passes before its body is even read: media types and size.

Host and Origin are checked by `web/origins.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable

from quart import Request

from refserver.errors import (
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)


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
    return await collect_body(request.body, request.headers.get("Content-Length"), limit)


async def collect_body(chunks: AsyncIterable[bytes], declared_length: str | None, limit: int) -> bytes:
    """The body from its chunks, refused (413) by its declared length or as soon as it grows past `limit`."""
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
    received: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
        received.append(chunk)
    return received[0] if len(received) == 1 else b"".join(received)
