"""The one request body reader: a body within a size bound (413) and a time bound (408).

Every route that reads a body uses it: `/mcp` (plain ASGI), `/message` (Quart) and the OAuth forms and
registration documents. It sits below both `transport/` and `oauth/`, which may not import each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

import trio

from refserver.errors import PayloadTooLarge, RequestTimeout


async def read_bounded_body(
    chunks: AsyncIterable[bytes], declared_length: str | None, *, limit: int, time_limit: float
) -> bytes:
    """The body from its chunks: refused by its declared length or as soon as it grows past `limit` bytes, and
    refused if it has not arrived whole within `time_limit` seconds (a client that stalls after its head)."""
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
    received: list[bytes] = []
    size = 0
    with trio.move_on_after(time_limit):
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
            received.append(chunk)
        return received[0] if len(received) == 1 else b"".join(received)
    raise RequestTimeout(f"Request Timeout: the body did not arrive within {time_limit:g} s")
