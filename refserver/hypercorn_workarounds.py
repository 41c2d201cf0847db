"""A fix for one Hypercorn bug, applied in-process until Hypercorn has its own.

The bug, its reproduction and the fix we would like upstream: docs/upstream/hypercorn-parked-reader.md.

Hypercorn 0.18's HTTP/1 reader parks when h11 says PAUSED (a request arrived before the previous exchange was done:
pipelined, or sent the moment the previous answer's last byte went out) and waits for `can_read`, which
`H11Protocol._maybe_recycle` sets once that exchange ends. If shutdown has begun by then, or the exchange cannot be
recycled, Hypercorn closes the connection instead; the reader, woken, asks h11 again, is told PAUSED again (h11 still
holds the early request and nobody will start the next cycle), and parks for good. Closing the socket does not wake
it (it is not reading the socket), so the connection's task, and with it the worker's exit, waits for the whole
`graceful_timeout`. `scripts/hypercorn_parked_reader.py` reproduces it in a few lines.

The fix: once Hypercorn has closed a connection whose h11 state machine can only answer PAUSED, give the protocol an h11
connection that has seen the peer's end of stream, and wake the reader: it then reads `ConnectionClosed`, leaves its
loop, finds the socket closed and ends like any closed connection. The early request is dropped unparsed, exactly as
Hypercorn meant to drop it by closing: it was never started, so the client may safely send it elsewhere.
"""

from __future__ import annotations

from typing import Any, Final

import h11
from hypercorn.events import Closed
from hypercorn.protocol.h11 import H11Protocol

FIXED_MARKER: Final = "_refserver_releases_parked_reader"


def closed_by_peer() -> h11.Connection:
    """An h11 server connection whose peer has ended its stream: every `next_event` answers `ConnectionClosed`."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"")
    return connection


def reader_parked_for_good(protocol: H11Protocol) -> bool:
    """Whether, with its connection closed, this protocol's reader waits for a cycle that will never start: the
    client's request is done, more has arrived behind it (h11 answers PAUSED until `start_next_cycle`), and no
    exchange is in progress whose end could start it."""
    connection = protocol.connection
    return (
        isinstance(connection, h11.Connection)
        and protocol.stream is None
        and connection.their_state is h11.DONE
        and bool(connection.trailing_data[0])
    )


def release_parked_readers_at_shutdown() -> None:
    """Patch `H11Protocol.handle` (idempotent) so that a closed connection's parked reader ends; see the module."""
    original = H11Protocol.handle
    if getattr(original, FIXED_MARKER, False):
        return

    async def handle(self: H11Protocol, event: Any) -> None:
        await original(self, event)
        # `Closed` reaches the protocol once the server has closed the socket (or found it gone).
        if isinstance(event, Closed) and reader_parked_for_good(self):
            self.connection = closed_by_peer()
            await self.can_read.set()

    setattr(handle, FIXED_MARKER, True)
    H11Protocol.handle = handle  # type: ignore[method-assign]
