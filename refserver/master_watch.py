"""A Hypercorn worker that outlives its master shuts itself down.

Hypercorn runs the app in a worker process that its master spawns; the master tells its workers to stop through a
shared event, set on SIGTERM or SIGINT. A master that dies without that (SIGKILL, the OOM killer, a crashed
supervisor) sets nothing, and the worker would go on serving on the inherited socket, owned by no supervisor. So the
worker watches its parent: once the parent is gone (the worker has been re-parented), it sets the master's shutdown
event itself, and the shutdown is the one SIGTERM gives (streams ended with `retry:`, tasks handed back, in-flight
work given Hypercorn's graceful timeout, then exit).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any, Final

import trio

logger = logging.getLogger(__name__)

MASTER_POLL_INTERVAL: Final = 0.5
"""Seconds between two looks at the parent: a worker outlives its master by at most this, plus its drain."""


def hypercorn_shutdown_event() -> Any:
    """The multiprocessing event Hypercorn's parent sets when shutdown starts (None if not a worker).

    Hypercorn gives the app no shutdown signal until every connection has ended, which open SSE
    streams never do; the worker's own process arguments carry the event it polls, so we poll it too
    and close our streams (with `retry:`) before Hypercorn's graceful timeout cuts them.
    """
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None) or {}
    return kwargs.get("shutdown_event")


def master_is_gone(parent_pid: int) -> bool:
    """Whether the process that started this one has ended (its children are then re-parented)."""
    return os.getppid() != parent_pid


async def watch_master(shutdown_event: Any, *, poll_interval: float = MASTER_POLL_INTERVAL) -> None:
    """Set `shutdown_event` (Hypercorn's multiprocessing event) when this worker's master is gone."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return  # not a spawned worker: whoever runs this process owns it
    # The pid multiprocessing recorded at the spawn, not getppid() now: a master already gone is seen too.
    parent_pid = parent.pid
    while not shutdown_event.is_set():
        if master_is_gone(parent_pid):
            logger.warning("the master process %d is gone: shutting this worker down", parent_pid)
            shutdown_event.set()
            return
        await trio.sleep(poll_interval)
