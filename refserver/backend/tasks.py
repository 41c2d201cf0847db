"""The task store and work queue: the TaskStore protocol, and the memory backend's implementation.

A task is a record (`protocol/tasks.TaskRecord`) kept until `created_at + ttl` and changed only by
compare-and-set on its version, so a runner, a `tasks/update` and a `tasks/cancel` racing on two instances never
both win. Its work is an entry in one queue that every instance consumes: a consumer *claims* an entry for a lease,
renews the lease while it runs, and acknowledges it when the run ends (finished, or parked for input). An entry
whose lease ran out (its instance died) is claimed again by whoever asks next; an entry given back at shutdown
(`release`) is claimable at once. On Redis this is a stream with a consumer group (`backend/redis/tasks.py`).

Bounds: unfinished tasks per owner, and entries in the queue (waiting or running), checked atomically with the
creation, so a refused creation leaves nothing behind.

Leases are measured by the claimer: on Redis a lease is the idle time after which `claim` takes an entry over, so
every instance sharing a Redis must use the same lease. `done` is not fenced on the consumer: a run that lost its
lease must not call it (the runner does not), and an entry whose task is gone (expired) is still `done` by whoever
claims it, so it stops counting against the queue's bound.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from refserver.errors import TaskLimitReached
from refserver.protocol.tasks import TaskRecord


@attrs.frozen
class Claim:
    """One queue entry held by one consumer: the task to run, and the entry to renew or acknowledge."""

    task_id: str
    entry_id: str


@attrs.frozen(kw_only=True)
class TaskStoreStatistics:
    tasks: int
    """Records kept (memory), or -1 where counting them would cost a scan (Redis)."""
    queued: int
    """Queue entries waiting or running."""
    created: int
    refused: int


class TaskStore(Protocol):
    async def create(self, record: TaskRecord, *, per_owner: int, queue_limit: int) -> None:
        """Store a new task and queue its work, or raise `TaskLimitReached` (and store nothing) when `record.owner`
        already has `per_owner` unfinished tasks or the queue holds `queue_limit` entries."""
        ...

    async def load(self, task_id: str) -> TaskRecord | None:
        """The record, or None if unknown or past its expiry."""
        ...

    async def replace(self, record: TaskRecord) -> bool:
        """Store `record` if the stored one is at `record.version - 1` (and still exists); False otherwise. A terminal
        record stops counting against its owner's bound."""
        ...

    async def enqueue(self, record: TaskRecord) -> None:
        """Queue another run of the task (after its input arrived); not bounded: the task is already counted."""
        ...

    async def claim(self, consumer: str, count: int, lease: float) -> list[Claim]:
        """Up to `count` entries for `consumer` for `lease` seconds: waiting ones first, then ones whose lease ran
        out (an instance was lost, or gave them back)."""
        ...

    async def renew(self, consumer: str, claims: Sequence[Claim], lease: float) -> list[Claim]:
        """Extend the leases `consumer` still holds; returns those (a lease that ran out may be someone else's)."""
        ...

    async def done(self, claims: Sequence[Claim]) -> None:
        """The runs ended: the entries leave the queue."""
        ...

    async def release(self, consumer: str, claims: Sequence[Claim]) -> None:
        """Give the entries back (shutdown): claimable by any consumer at once."""
        ...

    async def unfinished(self, owner: str) -> int:
        """How many unfinished tasks `owner` has (the per-owner bound counts these)."""
        ...

    async def owned(self, owner: str, limit: int) -> list[TaskRecord]:
        """Up to `limit` of the owner's tasks that have not expired, finished or not, newest first."""
        ...

    def statistics(self) -> TaskStoreStatistics: ...


@attrs.define
class _Lease:
    task_id: str
    consumer: str
    deadline: float


class MemoryTaskStore:
    """TaskStore in this process (the embedded default): everything runs in one Trio thread without awaiting
    between a check and its write, so each operation is atomic. Expiry is exact on every read; every creation
    first drops expired records, so memory stays bounded by the live tasks."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: dict[str, TaskRecord] = {}
        self._unfinished: dict[str, set[str]] = collections.defaultdict(set)
        self._waiting: collections.deque[tuple[str, str]] = collections.deque()
        self._leases: dict[str, _Lease] = {}
        self._entry_ids = itertools.count(1)
        self._created = 0
        self._refused = 0

    def _purge(self, now: float) -> None:
        for task_id in [t for t, r in self._records.items() if r.expires_at <= now]:
            self._forget(task_id)

    def _forget(self, task_id: str) -> None:
        record = self._records.pop(task_id, None)
        if record is not None:
            owned = self._unfinished.get(record.owner)
            if owned is not None:
                owned.discard(task_id)
                if not owned:
                    del self._unfinished[record.owner]

    async def create(self, record: TaskRecord, *, per_owner: int, queue_limit: int) -> None:
        self._purge(self._clock())
        if len(self._unfinished.get(record.owner, ())) >= per_owner:
            self._refused += 1
            raise TaskLimitReached(f"at most {per_owner} unfinished tasks per user; wait for one to finish")
        if len(self._waiting) + len(self._leases) >= queue_limit:
            self._refused += 1
            raise TaskLimitReached(f"the task queue is full ({queue_limit} tasks); retry later")
        self._records[record.task_id] = record
        self._unfinished[record.owner].add(record.task_id)
        self._created += 1
        self._queue(record.task_id)

    def _queue(self, task_id: str) -> None:
        self._waiting.append((str(next(self._entry_ids)), task_id))

    async def load(self, task_id: str) -> TaskRecord | None:
        record = self._records.get(task_id)
        if record is not None and record.expires_at <= self._clock():
            self._forget(task_id)
            return None
        return record

    async def replace(self, record: TaskRecord) -> bool:
        stored = await self.load(record.task_id)
        if stored is None or stored.version != record.version - 1:
            return False
        self._records[record.task_id] = record
        if record.terminal:
            self._unfinished.get(record.owner, set()).discard(record.task_id)
        return True

    async def enqueue(self, record: TaskRecord) -> None:
        self._queue(record.task_id)

    async def claim(self, consumer: str, count: int, lease: float) -> list[Claim]:
        now = self._clock()
        claims: list[Claim] = []
        while self._waiting and len(claims) < count:
            entry_id, task_id = self._waiting.popleft()
            self._leases[entry_id] = _Lease(task_id, consumer, now + lease)
            claims.append(Claim(task_id, entry_id))
        for entry_id, held in self._leases.items():
            if len(claims) >= count:
                break
            if held.deadline <= now:
                held.consumer, held.deadline = consumer, now + lease
                claims.append(Claim(held.task_id, entry_id))
        return claims

    async def renew(self, consumer: str, claims: Sequence[Claim], lease: float) -> list[Claim]:
        now = self._clock()
        kept = []
        for claim in claims:
            held = self._leases.get(claim.entry_id)
            if held is not None and held.consumer == consumer:
                held.deadline = now + lease
                kept.append(claim)
        return kept

    async def done(self, claims: Sequence[Claim]) -> None:
        for claim in claims:
            self._leases.pop(claim.entry_id, None)

    async def release(self, consumer: str, claims: Sequence[Claim]) -> None:
        for claim in claims:
            held = self._leases.get(claim.entry_id)
            if held is not None and held.consumer == consumer:
                held.deadline = 0.0

    async def unfinished(self, owner: str) -> int:
        self._purge(self._clock())
        return len(self._unfinished.get(owner, ()))

    async def owned(self, owner: str, limit: int) -> list[TaskRecord]:
        self._purge(self._clock())
        mine = [record for record in self._records.values() if record.owner == owner]
        return sorted(mine, key=lambda record: record.created_at, reverse=True)[:limit]

    def statistics(self) -> TaskStoreStatistics:
        return TaskStoreStatistics(
            tasks=len(self._records),
            queued=len(self._waiting) + len(self._leases),
            created=self._created,
            refused=self._refused,
        )
