"""TaskRunner: this instance's share of the task queue, run in the lifespan nursery.

Each instance claims work from the one queue (`backend/tasks.py`) while it has free workers, runs each claim in a
cancel scope of its own, and renews the leases of what it runs. Exactly one run at a time per task:

- a run starts by writing its claim token into the record (`runner`); every later write of that run is fenced on
  it, so a run that lost its lease can never overwrite the one that replaced it;
- a lease this instance can no longer renew (Redis unreachable for most of a lease, or taken over) cancels the
  run here before anyone else may claim it;
- a claim that finds a run already in progress knows that run was lost with its instance: an idempotent tool runs
  again from the start, any other task fails with the reason.

`tasks/cancel` reaches the running instance over the bus (`TaskCancelled`) and cancels exactly that run's scope.
At shutdown the runner stops claiming, cancels its runs and gives their leases back at once (non-idempotent ones
are failed first), so another instance carries on without waiting for a lease to run out.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import trio

from refserver.backend.messages import TASK_STATUS, GlobalMessage, ListenNotice, TaskCancelled
from refserver.backend.tasks import Claim, TaskStore
from refserver.call_context import Emitter
from refserver.errors import INTERNAL_ERROR, RefserverError
from refserver.observability.tracing import carried_fields
from refserver.protocol.core import CoreRequest, Failed, InputRequired, Outcome, RequestMeta, TraceContext
from refserver.protocol.jsonrpc import Notification
from refserver.protocol.tasks import (
    INPUT_REQUIRED,
    TaskFinished,
    TaskRecord,
    completed,
    failed,
    parked,
    progressed,
    started,
)

logger = logging.getLogger(__name__)

RunTool = Callable[[CoreRequest, Emitter], Awaitable[Outcome]]
Transition = Callable[[TaskRecord], TaskRecord]

CLAIM_POLL: Final = 0.5
"""Seconds between looks at the queue when nothing woke the runner (work queued on other instances, leases that
ran out): the queue latency a task sees at worst on an idle cluster."""
RENEWALS_PER_LEASE: Final = 3
"""Leases are renewed three times per lease, so two renewals in a row may fail before a lease is at risk."""
LEASE_SAFETY: Final = 0.8
"""Fraction of a lease after the last successful renewal at which this instance stops its runs: before the lease
can run out and another instance may claim the work."""
WRITE_ATTEMPTS: Final = 20
STORE_TIMEOUT: Final = 5.0
"""Seconds the shielded end-of-run writes (result, acknowledgement, release) may take at shutdown."""
PROGRESS_INTERVAL: Final = 0.25
"""Seconds between progress writes of one run: a chatty tool costs at most four writes a second."""


@attrs.define(eq=False)
class _Run:
    claim: Claim
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    token: str | None = None
    lost: bool = False
    """The lease is gone (taken over, or not renewable): this run's end must not touch the record or the queue."""
    handed_back: bool = False
    """Stopped by the drain: its work goes back to the queue (or fails, if it must not run twice)."""
    tool_running: bool = False
    """The tool is running: its record names this run as its runner. A run is claimed before that (its record is
    loaded and marked started first); a run stopped before this goes back to the queue untouched."""
    record: TaskRecord | None = None
    """The record as this run last read or wrote it: the next write starts from it (a compare-and-set that loses
    reads it again), so a run costs no read per write."""


@attrs.frozen(kw_only=True)
class TaskRunnerStatistics:
    workers: int
    running: int
    runs_ended: int
    """Runs that ended here with an outcome written (completed, failed, or parked for input)."""
    runs_lost: int
    """Runs found in progress when claimed: their instance was lost (run again, or failed)."""
    draining: bool


class TaskEmitter(Emitter):
    """What a task's run sends: its progress becomes the task's status message; nothing else has a listener."""

    def __init__(self, runner: TaskRunner, run: _Run, publish_notice: Callable[[ListenNotice], Awaitable[None]]):
        self._runner = runner
        self._run = run
        self._publish_notice = publish_notice
        self._last_progress = float("-inf")

    async def send(self, notification: Notification) -> None:
        params = notification.params
        if notification.method != "notifications/progress" or not params:
            return
        now = trio.current_time()
        if now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        await self._runner.write(self._run, lambda r: progressed(r, _progress_text(params), time.time()))

    async def end_connection(self) -> None:
        """A task has no connection of its own."""

    async def resource_updated(self, uri: str) -> None:
        await self._publish_notice(ListenNotice("resource", uri))

    async def list_changed(self, kind: str) -> None:
        await self._publish_notice(ListenNotice(kind))

    def allows_log(self, level: str) -> bool:
        return False


def _progress_text(params: dict[str, Any]) -> str:
    progress, total, message = params.get("progress"), params.get("total"), params.get("message")
    text = f"{progress:g}" if isinstance(progress, (int, float)) else str(progress)
    if isinstance(total, (int, float)):
        text += f" of {total:g}"
    return f"{text}: {message}" if message else text


class TaskRunner:
    def __init__(
        self,
        store: TaskStore,
        run_tool: RunTool,
        *,
        consumer: str,
        workers: int,
        lease: float,
        max_result_bytes: int,
        publish_notice: Callable[[ListenNotice], Awaitable[None]],
    ) -> None:
        self._store = store
        self._run_tool = run_tool
        self.consumer = consumer
        self.workers = workers
        self.lease = lease
        self._max_result_bytes = max_result_bytes
        self._publish_notice = publish_notice
        self._runs: dict[str, _Run] = {}
        self._wakeup = trio.Event()
        self._draining = False
        self.completed_runs = 0
        self.lost_runs = 0

    def wake(self) -> None:
        self._wakeup.set()

    def statistics(self) -> TaskRunnerStatistics:
        return TaskRunnerStatistics(
            workers=self.workers,
            running=len(self._runs),
            runs_ended=self.completed_runs,
            runs_lost=self.lost_runs,
            draining=self._draining,
        )

    def running(self) -> list[str]:
        """The tasks this instance holds a claim on: from their claim until their run's end is stored."""
        return [run.claim.task_id for run in self._runs.values()]

    def tools_running(self) -> list[str]:
        """The tasks whose tool runs here now (what /health counts): a claim being set up or wound down is not one."""
        return [run.claim.task_id for run in self._runs.values() if run.tool_running]

    async def on_global_message(self, message: GlobalMessage) -> None:
        if isinstance(message, TaskCancelled):
            self.cancel_local(message.task_id)

    def begin_drain(self) -> None:
        """Shutdown began: claim nothing more, and hand every run back now rather than when the process ends."""
        self._draining = True
        for run in self._runs.values():
            run.handed_back = True
            run.scope.cancel()
        self.wake()

    def cancel_local(self, task_id: str) -> None:
        for run in self._runs.values():
            if run.claim.task_id == task_id:
                run.scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[TaskRunner] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._renew_leases)
            task_status.started(self)
            try:
                await self._claim_work(nursery)
            finally:
                self._draining = True  # the runs' own ends give their leases back (see `_execute`)

    async def _claim_work(self, nursery: trio.Nursery) -> None:
        while True:
            free = self.workers - len(self._runs)
            claims: list[Claim] = []
            if free > 0 and not self._draining:
                try:
                    claims = await self._store.claim(self.consumer, free, self.lease)
                except RefserverError as exc:  # Redis down or restarting: look again after the poll interval
                    logger.warning("task queue unavailable: %s", exc.message)
            for claim in claims:
                run = _Run(claim)
                self._runs[claim.entry_id] = run
                nursery.start_soon(self._execute, run)
            if claims and len(claims) == free:
                continue
            with trio.move_on_after(CLAIM_POLL):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    async def _renew_leases(self) -> None:
        interval = self.lease / RENEWALS_PER_LEASE
        last_renewed = trio.current_time()
        failing = False
        while True:
            wake_at = trio.current_time() + interval
            if failing:  # wake exactly at the safety point too, not at the next tick past it
                wake_at = min(wake_at, last_renewed + self.lease * LEASE_SAFETY)
            await trio.sleep_until(wake_at)
            runs = [run for run in self._runs.values() if not run.lost]
            if not runs:
                last_renewed, failing = trio.current_time(), False
                continue
            try:
                kept = await self._store.renew(self.consumer, [run.claim for run in runs], self.lease)
            except RefserverError as exc:
                failing = True
                if trio.current_time() - last_renewed >= self.lease * LEASE_SAFETY:
                    logger.warning("task leases not renewable (%s): stopping %d runs", exc.message, len(runs))
                    for run in runs:
                        self._lose(run)
                continue
            last_renewed, failing = trio.current_time(), False
            renewed = {claim.entry_id for claim in kept}
            for run in runs:
                if run.claim.entry_id not in renewed:
                    logger.warning("task %s: lease taken over, stopping this run", run.claim.task_id)
                    self._lose(run)

    def _lose(self, run: _Run) -> None:
        run.lost = True
        run.scope.cancel()

    async def _execute(self, run: _Run) -> None:
        try:
            await self._run_claim(run)
            if run.handed_back:
                with trio.move_on_after(STORE_TIMEOUT):
                    await self._give_back(run)
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(STORE_TIMEOUT):
                await self._give_back(run)
            raise
        except RefserverError as exc:
            # The run's record could not be read or written: its lease runs out and another attempt follows.
            logger.warning("task %s: store unavailable (%s)", run.claim.task_id, exc.message)
            run.lost = True
        finally:
            self._runs.pop(run.claim.entry_id, None)
            self.wake()
        if not run.lost:
            with trio.move_on_after(STORE_TIMEOUT):
                await self._store.done([run.claim])

    async def _give_back(self, run: _Run) -> None:
        """Shutdown: a non-idempotent run fails here and now; an idempotent one goes back to the queue at once."""
        run.lost = True
        record = await self._store.load(run.claim.task_id)
        if record is not None and not record.terminal and run.token is not None and not record.idempotent:
            reason = "the instance running this task shut down, and the tool is not safe to run again"
            if await self.write(run, lambda r: failed(r, INTERNAL_ERROR, reason, time.time())):
                await self._store.done([run.claim])
                return
        await self._store.release(self.consumer, [run.claim])

    async def _run_claim(self, run: _Run) -> None:
        record = run.record = await self._store.load(run.claim.task_id)
        if record is None or record.terminal or record.status == INPUT_REQUIRED:
            return  # expired, cancelled while queued, or waiting for its client: nothing to run
        if record.runner is not None:
            self.lost_runs += 1
            if not record.idempotent:
                reason = "the instance running this task was lost, and the tool is not safe to run again"
                logger.warning("task %s not run again: %s", record.task_id, reason)
                run.token = record.runner
                await self.write(run, lambda r: failed(r, INTERNAL_ERROR, reason, time.time()))
                return
            logger.info("task %s: its run was lost with its instance; running it again", record.task_id)
        if run.handed_back:
            return  # drained before it began: the entry goes back untouched
        run.token = f"{self.consumer}/{secrets.token_hex(8)}"
        token = run.token
        fence = record.runner
        begun = await self._write(run, lambda r: started(r, token, time.time()), fence=fence)
        if begun is None:
            return
        outcome: Outcome | None = None
        with run.scope:
            # A task's work ends with its time to live: the record is gone then, and nobody could read a result.
            run.scope.deadline = trio.current_time() + max(0.0, begun.expires_at - time.time())
            run.tool_running = True
            try:
                outcome = await self._run_tool(_request_of(begun), TaskEmitter(self, run, self._publish_notice))
            finally:
                run.tool_running = False
        if outcome is None or run.lost:
            return  # cancelled (the record already says so), expired, or lost to another instance
        await self.write(run, self._transition_for(outcome))
        self.completed_runs += 1

    def _transition_for(self, outcome: Outcome) -> Transition:
        now = time.time()
        if isinstance(outcome, InputRequired):
            return lambda r: parked(r, outcome, now)
        if isinstance(outcome, Failed):
            error = outcome.error
            return lambda r: failed(r, error.jsonrpc_code, error.message, now, error.data)
        result = outcome.result
        size = len(json.dumps(result, separators=(",", ":")))
        if size > self._max_result_bytes:
            reason = f"the result ({size} bytes) is larger than this server keeps ({self._max_result_bytes} bytes)"
            return lambda r: failed(r, INTERNAL_ERROR, reason, now)
        return lambda r: completed(r, result, now)

    async def write(self, run: _Run, transition: Transition) -> TaskRecord | None:
        """Apply `transition` to the task if this run still owns it (its token is the record's runner)."""
        return await self._write(run, transition, fence=run.token)

    async def _write(self, run: _Run, transition: Transition, *, fence: str | None) -> TaskRecord | None:
        for _ in range(WRITE_ATTEMPTS):
            record, run.record = run.record, None
            if record is None:
                record = await self._store.load(run.claim.task_id)
            if record is None or record.runner != fence:
                return None
            try:
                changed = transition(record)
            except TaskFinished:
                return None
            if await self._store.replace(changed):
                run.record = changed
                if changed.status != record.status:
                    await self._publish_notice(ListenNotice(TASK_STATUS, task_id=changed.task_id))
                return changed
        logger.warning("task %s: gave up writing after %d conflicts", run.claim.task_id, WRITE_ATTEMPTS)
        return None


def _request_of(record: TaskRecord) -> CoreRequest:
    meta = RequestMeta(
        protocol_version=record.protocol_version,
        client_capabilities=record.client_capabilities,
        client_info=record.client_info,
        subject=record.owner or None,
        trace=TraceContext(**carried) if (carried := carried_fields(record.trace)) else None,
    )
    # The task id is the progress token: what the tool reports becomes the task's status message.
    params = {"name": record.tool, "arguments": dict(record.arguments), "_meta": {"progressToken": record.task_id}}
    return CoreRequest(f"task-{record.task_id}", "tools/call", params, meta, record.answers, record.handler_state)
