"""Checks every MCP request passes before its body is even read: media types; the Quart side of the body reader.

Host and Origin are checked by `web/origins.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

from quart import Request

from refserver.errors import (
    NotAcceptable,
    UnsupportedMediaType,
)
from refserver.request_body import read_bounded_body


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
