"""`subscriptions/listen` (2026 era): one long-lived POST response per listener, fed from every instance.

A listener opts in to notification types (`toolsListChanged`, `promptsListChanged`, `resourcesListChanged`) and
to resource URIs (`resourceSubscriptions`). Its stream opens with `notifications/subscriptions/acknowledged`,
and every notification on it carries `io.modelcontextprotocol/subscriptionId` (the listen request's id).

Changes are published as `ListenNotice`s: over the bus to every instance when there are several (each delivers
to its own listeners, itself included, since the bus's global channel reaches the publisher too), or straight to
the local listeners on the memory backend. Each listener has a small queue; a listener too slow to keep up is
ended (its client listens again) rather than let the queue grow. A listener also ends when its access token
expires or is revoked, when the server drains (with a `SubscriptionsListenResult`, the graceful end), or when
its client leaves.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Final

import attrs
import trio

from refserver.backend.kv import KeyValueStore
from refserver.backend.messages import TASK_STATUS, BusResynced, GlobalMessage, ListenNotice, TokenRevoked
from refserver.backend.sessions import Bus
from refserver.errors import InvalidParams, ServiceUnavailable
from refserver.oauth.models import AccessInfo
from refserver.protocol.envelope import SERVER_INFO_KEY, SUBSCRIPTION_ID_KEY
from refserver.protocol.jsonrpc import Notification, RequestId, Response, encode_message
from refserver.protocol.sse import HEARTBEAT, encode_event

logger = logging.getLogger(__name__)

LISTENER_QUEUE: Final = 64
"""Notices one listener may have waiting; one more ends it (a client that cannot keep up re-lists)."""
UPDATE_LEASE_KEY: Final = "listen:resource-updates"
"""Held by the one instance that announces the demo's periodic resource updates this round."""

LIST_CHANGED: Final[Mapping[str, tuple[str, str]]] = {
    "tools": ("toolsListChanged", "notifications/tools/list_changed"),
    "prompts": ("promptsListChanged", "notifications/prompts/list_changed"),
    "resources": ("resourcesListChanged", "notifications/resources/list_changed"),
}
RESOURCE_UPDATE: Final = "resource"
TASK_NOTIFICATION: Final = "notifications/tasks"
MAX_TASK_SUBSCRIPTIONS: Final = 100
"""Task ids one listener may follow: a client follows the few tasks it waits for, not a history."""
GRACEFUL_ENDS: Final = frozenset({"shutdown", "overflow", "resync"})
"""Ends the client is told of (with the listen request's result), so that it listens again at once."""
NOTHING: Final[frozenset[str]] = frozenset()
"""The one empty set every filter shares: a listener lives as long as its stream, 10,000 of them at once."""


def _shared(values: set[str] | list[str] | tuple[str, ...]) -> frozenset[str]:
    return frozenset(values) if values else NOTHING


@attrs.frozen
class ListenFilter:
    lists: frozenset[str]
    """Which of `tools`, `prompts`, `resources` the listener wants list-changed notifications for."""
    resources: frozenset[str]
    task_ids: frozenset[str] = NOTHING
    """The tasks (extension `io.modelcontextprotocol/tasks`) whose status changes the listener wants."""

    @classmethod
    def parse(cls, params: Mapping[str, Any] | None) -> ListenFilter:
        wanted = (params or {}).get("notifications")
        if not isinstance(wanted, Mapping):
            raise InvalidParams("subscriptions/listen needs params.notifications, the notification types to receive")
        lists = set()
        for kind, (field, _method) in LIST_CHANGED.items():
            flag = wanted.get(field)
            if flag is not None and not isinstance(flag, bool):
                raise InvalidParams(f"notifications.{field} must be a boolean")
            if flag:
                lists.add(kind)
        uris = wanted.get("resourceSubscriptions")
        if uris is not None and (not isinstance(uris, list) or not all(isinstance(u, str) for u in uris)):
            raise InvalidParams("notifications.resourceSubscriptions must be a list of URIs")
        task_ids = wanted.get("taskIds")
        if task_ids is not None and (
            not isinstance(task_ids, list)
            or not all(isinstance(t, str) for t in task_ids)
            or len(task_ids) > MAX_TASK_SUBSCRIPTIONS
        ):
            raise InvalidParams(f"notifications.taskIds must be a list of at most {MAX_TASK_SUBSCRIPTIONS} task ids")
        return cls(_shared(lists), _shared(uris or ()), _shared(task_ids or ()))

    def as_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {field: True for kind, (field, _) in LIST_CHANGED.items() if kind in self.lists}
        if self.resources:
            wire["resourceSubscriptions"] = sorted(self.resources)
        if self.task_ids:
            wire["taskIds"] = sorted(self.task_ids)
        return wire

    def notifications_for(self, notice: ListenNotice) -> list[Notification]:
        if notice.kind in LIST_CHANGED:
            return [Notification(LIST_CHANGED[notice.kind][1])] if notice.kind in self.lists else []
        if notice.kind == TASK_STATUS:
            # Only the id travels: the stream reads the task when it sends (`Listener.describe_task`).
            wanted = notice.task_id is not None and notice.task_id in self.task_ids
            return [Notification(TASK_NOTIFICATION, {"taskId": notice.task_id})] if wanted else []
        if notice.kind != RESOURCE_UPDATE:
            return []
        # No URI: every subscribed resource changed (the demo's periodic update).
        uris = sorted(self.resources) if notice.uri is None else [notice.uri] if notice.uri in self.resources else []
        return [Notification("notifications/resources/updated", {"uri": uri}) for uri in uris]


@attrs.define(eq=False)
class Listener:
    """One open listen stream's registration and its queue.

    The queue is a plain deque made at the first notice and a parked reader woken by the offer, not a memory
    channel: an idle listener (nearly all of them) holds no queue and no trio object but its waiting task.
    """

    request_id: RequestId
    filter: ListenFilter
    access: AccessInfo | None
    end_reason: str | None = None
    describe_task: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None
    """The task as `notifications/tasks` carries it (None: gone), read when its notification is sent."""
    _pending: deque[Notification] | None = None
    """At most LISTENER_QUEUE notifications not yet sent."""
    _reader: trio.lowlevel.Task | None = None
    """The stream's task while it waits in `next_notification`."""

    def end(self, reason: str) -> None:
        """Stop the stream: what is queued is still sent, then the stream ends (its waiting reader is woken)."""
        if self.end_reason is None:
            self.end_reason = reason
            self._wake()

    def offer(self, notice: ListenNotice) -> None:
        if self.end_reason is not None:
            return  # ended: nothing more is queued
        notifications = self.filter.notifications_for(notice)
        if not notifications:
            return
        if self._pending is None:
            self._pending = deque()
        for notification in notifications:
            if len(self._pending) >= LISTENER_QUEUE:
                self.end("overflow")
                return
            self._pending.append(notification)
        self._wake()

    async def next_notification(self) -> Notification | None:
        """The next queued notification, waiting for one; None once the listener has ended and its queue is sent."""
        # Scheduled like a memory channel's receive: one checkpoint when something is already queued, none more
        # after waking for an offer (the stream sends it at once, before whatever the offer's publisher does next).
        if self._pending or self.end_reason is not None:
            await trio.lowlevel.checkpoint()  # cancelled here, the notification stays queued
        else:
            await self._wait_for_offer()
        while not self._pending:
            if self.end_reason is not None:
                return None
            await self._wait_for_offer()
        return self._pending.popleft()

    async def _wait_for_offer(self) -> None:
        if self._reader is not None:
            raise trio.BusyResourceError("another task already reads this listener")
        self._reader = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._reader = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake(self) -> None:
        if self._reader is not None:
            trio.lowlevel.reschedule(self._reader)
            self._reader = None


class ListenHub:
    """The listeners of this instance, and the one way to announce a change to every instance's listeners."""

    def __init__(self, bus: Bus, *, max_listeners: int) -> None:
        self._bus = bus
        self._max_listeners = max_listeners
        self._listeners: set[Listener] = set()
        self._draining = False
        self.delivered = 0
        self.overflowed = 0
        bus.add_global_handler(self.on_global_message)

    def __len__(self) -> int:
        return len(self._listeners)

    def admit(self) -> None:
        """Refuse (503) a new listener while draining or full; `listening` checks it too."""
        if self._draining:
            raise ServiceUnavailable("the server is shutting down: listen on another instance")
        if len(self._listeners) >= self._max_listeners:
            raise ServiceUnavailable("too many listeners on this instance; try again later")

    @contextlib.contextmanager
    def listening(self, request_id: RequestId, wanted: ListenFilter, access: AccessInfo | None) -> Iterator[Listener]:
        """A new listener, registered for the block (refused with 503 while draining or full)."""
        self.admit()
        listener = Listener(request_id, wanted, access)
        self.enter(listener)
        try:
            yield listener
        finally:
            self.leave(listener)

    def enter(self, listener: Listener) -> None:
        """Register `listener`: notices reach it from now on. Admitted earlier (`admit`), it may find a drain
        begun since: then it ends at once, gracefully."""
        if self._draining:
            listener.end("shutdown")
        self._listeners.add(listener)

    def leave(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        if listener.end_reason == "overflow":
            self.overflowed += 1

    async def publish(self, notice: ListenNotice) -> None:
        if self._bus.distributed:
            await self._bus.publish_global(notice)  # comes back to this instance too
        else:
            self.deliver(notice)

    def deliver(self, notice: ListenNotice) -> None:
        for listener in list(self._listeners):
            listener.offer(notice)
            self.delivered += 1

    async def on_global_message(self, message: GlobalMessage) -> None:
        match message:
            case ListenNotice():
                self.deliver(message)
            case TokenRevoked(jti, grant_id):
                await self.token_revoked(jti, grant_id)
            case BusResynced():
                # A notice published while the bus was away is lost: end every stream gracefully, so that each
                # client listens again and refetches what it caches, rather than miss a change silently.
                for listener in list(self._listeners):
                    listener.end("resync")

    async def token_revoked(self, jti: str | None, grant_id: str | None) -> None:
        for listener in list(self._listeners):
            access = listener.access
            if access is None:
                continue
            if (jti is not None and access.token_id == jti) or (grant_id is not None and access.grant_id == grant_id):
                listener.end("revoked")

    def begin_drain(self) -> None:
        self._draining = True
        for listener in list(self._listeners):
            listener.end("shutdown")

    async def announce_periodic_updates(self, store: KeyValueStore, interval: float) -> None:
        """The demo's resource updates, every `interval` seconds, announced by one instance per round."""
        while True:
            await trio.sleep(interval)
            try:
                if await store.set_if_absent(UPDATE_LEASE_KEY, b"1", interval * 0.9):
                    await self.publish(ListenNotice(RESOURCE_UPDATE))
            except ServiceUnavailable as exc:
                logger.warning("periodic resource updates skipped this round: %s", exc)


async def listen_stream(
    listener: Listener, *, heartbeat_interval: float, server_info: Mapping[str, Any], hub: ListenHub | None = None
) -> AsyncGenerator[bytes, None]:
    """The SSE body of one listener: the acknowledgement, the notices, heartbeats, and (when the server ends the
    subscription) the listen request's result.

    `hub`: the listener is registered with it for exactly as long as the body is being sent (from its first chunk
    until it is closed: when the response ends or its client leaves), rather than by a task holding `listening`
    open beside the stream. A body never started registers nothing. Without it, the caller registered it.
    """
    if hub is not None:
        hub.enter(listener)
    try:
        subscription = {SUBSCRIPTION_ID_KEY: listener.request_id}
        wire = {"notifications": listener.filter.as_wire(), "_meta": subscription}
        yield encode_event(encode_message(Notification("notifications/subscriptions/acknowledged", wire)))
        del wire  # an open stream keeps only what it needs to send
        expires_at = listener.access.expires_at if listener.access is not None else None
        deadline = trio.current_time() + (expires_at - time.time()) if expires_at is not None else float("inf")
        while True:
            # One cancel scope per wait, at the heartbeat or the token's expiry, whichever comes first.
            with trio.move_on_at(min(deadline, trio.current_time() + heartbeat_interval)) as idle:
                notification = await listener.next_notification()
            if idle.cancelled_caught:
                if trio.current_time() >= deadline:
                    break  # the access token expired: the client listens again with a fresh one
                yield HEARTBEAT
                continue
            if notification is None:
                break
            params = dict(notification.params or {})
            if notification.method == TASK_NOTIFICATION and listener.describe_task is not None:
                described: dict[str, Any] | None = None
                with trio.move_on_at(deadline):
                    described = await listener.describe_task(str(params.get("taskId")))
                if trio.current_time() >= deadline:
                    break
                if described is None:
                    continue
                params = described
            params["_meta"] = {**params.get("_meta", {}), **subscription}
            yield encode_event(encode_message(Notification(notification.method, params)))
        if listener.end_reason in GRACEFUL_ENDS:
            # A graceful end, told to the client: it may listen again (elsewhere) at once.
            result = {"resultType": "complete", "_meta": {**subscription, SERVER_INFO_KEY: dict(server_info)}}
            yield encode_event(encode_message(Response(listener.request_id, result)))
    finally:
        if hub is not None:
            hub.leave(listener)
