"""TaskService: the request core's `TaskBook`, over the backend's task store (any instance, any request).

Creation stores the record and queues the work before the handle goes back, so a `tasks/get` on any instance finds
it at once. Every change is a compare-and-set of the record (`protocol/tasks.py` transitions), retried on a
conflict. A task of another owner is not found, like an unknown one: ids cannot be probed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import trio

from refserver.backend.tasks import TaskStore
from refserver.errors import InternalError, TaskNotFound
from refserver.observability.tracing import TRACING
from refserver.protocol.core import CoreRequest, InputFailure
from refserver.protocol.tasks import TaskFinished, TaskRecord, answered, cancelled

TASK_ID_BYTES: Final = 24
"""192 random bits per task id: unguessable (the extension's MUST), like the session ids."""
CHANGE_ATTEMPTS: Final = 20
"""Compare-and-set rounds before a change gives up: each lost round means another writer won, which can only
happen a few times in a row (the runner's progress, an update, a cancel)."""
WAIT_POLL: Final = 0.1
"""Seconds between looks at the store while waiting for a task to change (2025 `tasks/result`)."""
MAX_LISTED: Final = 1000
"""Tasks one `tasks/list` can page through (the newest)."""
POLL_INTERVAL_MS: Final = 500
"""What clients are told to wait between polls (`pollIntervalMs`)."""


@attrs.frozen
class TaskLimits:
    ttl: float
    per_subject: int
    queue_limit: int


class TaskService:
    def __init__(
        self,
        store: TaskStore,
        limits: TaskLimits,
        *,
        wake_runner: Callable[[], None],
        announce_cancel: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.limits = limits
        self._wake_runner = wake_runner
        self._announce_cancel = announce_cancel
        self._clock = clock
        self.status_changed: Callable[[str], Awaitable[None]] | None = None
        """Told the id of every task whose status this service changed (listeners follow them)."""

    async def _changed(self, task_id: str) -> None:
        if self.status_changed is not None:
            await self.status_changed(task_id)

    async def create(self, request: CoreRequest, *, idempotent: bool, ttl_ms: int | None = None) -> TaskRecord:
        now = self._clock()
        longest = round(self.limits.ttl * 1000)
        params = request.params or {}
        arguments = params.get("arguments")
        record = TaskRecord(
            task_id=secrets.token_urlsafe(TASK_ID_BYTES),
            owner=request.meta.subject or "",
            protocol_version=request.meta.protocol_version,
            tool=str(params.get("name")),
            arguments=dict(arguments) if isinstance(arguments, Mapping) else {},
            client_capabilities=dict(request.meta.client_capabilities),
            client_info=dict(request.meta.client_info) if request.meta.client_info is not None else None,
            idempotent=idempotent,
            created_at=now,
            updated_at=now,
            ttl_ms=min(ttl_ms, longest) if ttl_ms is not None else longest,
            poll_interval_ms=POLL_INTERVAL_MS,
            # What was asked before the task existed (a prelude's round) is the first run's input.
            answers={k: v for k, v in request.input_responses.items() if not isinstance(v, InputFailure)},
            handler_state=dict(request.request_state) if request.request_state is not None else None,
            trace=TRACING.carrier(),
        )
        await self.store.create(record, per_owner=self.limits.per_subject, queue_limit=self.limits.queue_limit)
        self._wake_runner()
        return record

    async def get(self, task_id: str, owner: str) -> TaskRecord:
        record = await self.store.load(task_id)
        if record is None or record.owner != owner:
            raise TaskNotFound(f"Task not found: {task_id}")
        return record

    async def update(self, task_id: str, owner: str, responses: Mapping[str, Any]) -> TaskRecord:
        for _ in range(CHANGE_ATTEMPTS):
            record = await self.get(task_id, owner)
            changed, resume = answered(record, responses, self._clock())
            if changed is record:
                return record
            if await self.store.replace(changed):
                if resume:
                    await self.store.enqueue(changed)
                    self._wake_runner()
                if changed.status != record.status:
                    await self._changed(task_id)
                return changed
        raise InternalError(f"Task {task_id} changed too often to be updated; retry")

    async def cancel(self, task_id: str, owner: str) -> TaskRecord:
        for _ in range(CHANGE_ATTEMPTS):
            record = await self.get(task_id, owner)
            try:
                changed = cancelled(record, self._clock())
            except TaskFinished:
                return record
            if await self.store.replace(changed):
                await self._announce_cancel(task_id)
                await self._changed(task_id)
                return changed
        raise InternalError(f"Task {task_id} changed too often to be cancelled; retry")

    async def wait_for_change(self, record: TaskRecord, seconds: float) -> TaskRecord:
        with trio.move_on_after(seconds):
            while True:
                await trio.sleep(WAIT_POLL)
                current = await self.get(record.task_id, record.owner)
                if current.version != record.version:
                    return current
        return await self.get(record.task_id, record.owner)

    async def owned(self, owner: str) -> list[TaskRecord]:
        return await self.store.owned(owner, MAX_LISTED)
