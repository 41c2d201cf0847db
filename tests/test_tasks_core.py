"""Tasks without sockets: the record's transitions and wire forms (pure), then the core, the service and two runners
over one memory store, in process: creation, input inside a task, exact cancellation, and the fencing that keeps a
run whose lease was taken over from writing anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio

from refserver.backend.tasks import Claim, MemoryTaskStore
from refserver.dispatch import RequestCore
from refserver.errors import BackendUnavailable
from refserver.features import conformance, reference
from refserver.features.catalog import FeatureIndex
from refserver.protocol.core import Complete, CoreRequest, InputRequest, InputRequired, RequestMeta
from refserver.protocol.tasks import (
    TASKS_EXTENSION,
    TaskFinished,
    TaskRecord,
    answered,
    cancelled,
    completed,
    detailed_task,
    parked,
    started,
    task_2025,
    task_handle,
)
from refserver.tasks.runner import TaskRunner
from refserver.tasks.service import TaskLimits, TaskService
from tests.conftest import wait_until

MODERN = "2026-07-28"
ASK = InputRequest("elicitation/create", {"message": "ok?", "requestedSchema": {"type": "object"}})


def record(**changes: Any) -> TaskRecord:
    base = TaskRecord(
        task_id="t1",
        owner="alice",
        protocol_version=MODERN,
        tool="confirm_delete",
        arguments={},
        client_capabilities={},
        client_info=None,
        idempotent=True,
        created_at=1000.0,
        updated_at=1000.0,
        ttl_ms=60_000,
        poll_interval_ms=500,
    )
    return TaskRecord(**{**base.__dict__, **changes}) if changes else base


def test_input_keys_are_unique_over_the_tasks_life_and_partial_answers_keep_it_waiting() -> None:
    first = parked(started(record(), "a/1", 1001), InputRequired({"x": ASK, "y": ASK}), 1002)
    assert first.status == "input_required" and sorted(first.input_requests) == ["r1-x", "r1-y"]
    assert first.runner is None and first.version == 2
    same, resume = answered(first, {"unknown": {}, "r0-x": {}}, 1003)
    assert same is first and not resume  # keys not outstanding change nothing
    partial, resume = answered(first, {"r1-x": {"action": "accept"}}, 1003)
    assert partial.status == "input_required" and list(partial.input_requests) == ["r1-y"] and not resume
    whole, resume = answered(partial, {"r1-y": {"action": "decline"}}, 1004)
    assert (
        resume
        and whole.status == "working"
        and whole.answers == {"x": {"action": "accept"}, "y": {"action": "decline"}}
    )
    second = parked(started(whole, "b/2", 1005), InputRequired({"x": ASK}), 1006)
    assert list(second.input_requests) == ["r2-x"]  # the same handler key, a new task key


def test_terminal_is_final_and_versions_only_grow() -> None:
    done = completed(started(record(), "a/1", 1001), {"content": []}, 1002)
    with pytest.raises(TaskFinished):
        cancelled(done, 1003)
    with pytest.raises(TaskFinished):
        started(done, "b/1", 1003)
    assert done.version == 2 and done.runner is None
    assert TaskRecord.from_json(done.to_json()) == done


def test_wire_forms_of_both_eras() -> None:
    handle = task_handle(record())
    assert handle["resultType"] == "task" and handle["ttlMs"] == 60_000 and handle["pollIntervalMs"] == 500
    assert not {"result", "error", "inputRequests", "requestState", "ttl", "pollInterval", "task"} & set(handle)
    assert handle["createdAt"] == "1970-01-01T00:16:40.000Z"
    waiting = detailed_task(parked(record(), InputRequired({"x": ASK}), 1001))
    assert waiting["resultType"] == "complete" and list(waiting["inputRequests"]) == ["r1-x"]
    finished = detailed_task(completed(record(), {"content": [], "isError": True}, 1001))
    assert finished["result"]["isError"] is True and "inputRequests" not in finished
    legacy = task_2025(record())
    assert legacy["ttl"] == 60_000 and legacy["pollInterval"] == 500 and "ttlMs" not in legacy


# --- in process: core, service, runners over one memory store ----------------------------------------------------


class FlakyRenewals(MemoryTaskStore):
    """The real memory store, whose renewals fail while `broken` (an instance cut off from its store)."""

    broken = False

    async def renew(self, consumer: str, claims: Sequence[Claim], lease: float) -> list[Claim]:
        if self.broken:
            raise BackendUnavailable("cut off")
        return await super().renew(consumer, claims, lease)


def build(store: MemoryTaskStore, lease: float) -> tuple[RequestCore, TaskService, list[TaskRunner]]:
    runners: list[TaskRunner] = []

    def wake() -> None:
        for runner in runners:
            runner.wake()

    async def announce(task_id: str) -> None:
        for runner in runners:
            runner.cancel_local(task_id)

    service = TaskService(
        store, TaskLimits(ttl=60, per_subject=10, queue_limit=10), wake_runner=wake, announce_cancel=announce
    )
    core = RequestCore(FeatureIndex.build([reference.build_catalog(), conformance.build_catalog()]), tasks=service)

    async def notice(_: Any) -> None:
        return None

    for consumer in ("a", "b"):
        runners.append(
            TaskRunner(
                store,
                core.run_task,
                consumer=consumer,
                workers=4,
                lease=lease,
                max_result_bytes=10_000,
                publish_notice=notice,
            )
        )
    return core, service, runners


def call(tool: str, arguments: dict[str, Any], request_id: int = 1) -> CoreRequest:
    capabilities = {"elicitation": {}, "extensions": {TASKS_EXTENSION: {}}}
    envelope = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    }
    params = {"name": tool, "arguments": arguments, "_meta": envelope}
    return CoreRequest(request_id, "tools/call", params, RequestMeta(MODERN, capabilities, subject="alice"))


class Silent:
    async def send(self, notification: Any) -> None:
        return None

    async def end_connection(self) -> None:
        return None

    async def resource_updated(self, uri: str) -> None:
        return None

    async def list_changed(self, kind: str) -> None:
        return None

    def allows_log(self, level: str) -> bool:
        return False


async def wait_status(store: MemoryTaskStore, task_id: str, status: str) -> TaskRecord:
    with trio.fail_after(10):
        while (found := await store.load(task_id)) is None or found.status != status:
            await trio.sleep(0.01)
    return found


async def test_a_task_through_the_core_with_input_and_cancel() -> None:
    store = MemoryTaskStore()
    core, service, runners = build(store, lease=5)
    async with trio.open_nursery() as nursery:
        for runner in runners:
            await nursery.start(runner.run)
        outcome = await core.handle(call("confirm_delete", {"filename": "f"}), Silent())
        assert isinstance(outcome, Complete) and outcome.result["resultType"] == "task"
        task_id = outcome.result["taskId"]
        waiting = await wait_status(store, task_id, "input_required")
        (key,) = waiting.input_requests
        await service.update(task_id, "alice", {key: {"action": "accept", "content": {"confirm": True}}})
        done = await wait_status(store, task_id, "completed")
        assert done.result is not None and done.result["content"][0]["text"] == "Deleted f"

        slow = await core.handle(call("longRunningOperation", {"duration": 60, "steps": 60}), Silent())
        assert isinstance(slow, Complete)
        slow_id = slow.result["taskId"]
        await wait_status(store, slow_id, "working")
        with trio.fail_after(5):
            while not any(slow_id in runner.running() for runner in runners):
                await trio.sleep(0.01)
        await service.cancel(slow_id, "alice")
        with trio.fail_after(5):
            while any(runner.running() for runner in runners):
                await trio.sleep(0.01)
        assert (await store.load(slow_id)).status == "cancelled"  # type: ignore[union-attr]
        assert store.statistics().queued == 0
        nursery.cancel_scope.cancel()


async def test_a_run_that_lost_its_lease_stops_and_writes_nothing() -> None:
    store = FlakyRenewals()
    lease = 0.3
    core, _, (first, second) = build(store, lease)
    async with trio.open_nursery() as nursery:
        first_scope = trio.CancelScope()

        async def run_first(*, task_status: trio.TaskStatus[None]) -> None:
            with first_scope:
                await first.run(task_status=task_status)

        await nursery.start(run_first)
        outcome = await core.handle(call("slow_compute", {"seconds": 1.0, "label": "once"}), Silent())
        assert isinstance(outcome, Complete)
        task_id = outcome.result["taskId"]
        with trio.fail_after(5):
            while task_id not in first.running():
                await trio.sleep(0.01)
        store.broken = True  # the first runner can no longer renew: it must stop before the lease runs out
        with trio.fail_after(5):
            while first.running():
                await trio.sleep(0.01)
        first_scope.cancel()  # that instance is gone now; its run wrote nothing after it lost the lease
        assert (await store.load(task_id)).runs == 1  # type: ignore[union-attr]
        store.broken = False
        await nursery.start(second.run)
        done = await wait_status(store, task_id, "completed")
        assert done.runs == 2 and done.runner is None
        assert store.statistics().queued == 0
        nursery.cancel_scope.cancel()


class HeldStart(MemoryTaskStore):
    """The real memory store, whose write marking a run started waits for `go` (a slow Redis at that moment)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = trio.Event()

    async def replace(self, record: TaskRecord) -> bool:
        if record.runner is not None and not self.go.is_set():
            await self.go.wait()
        return await super().replace(record)


async def test_a_claim_whose_tool_has_not_begun_is_not_counted_as_running() -> None:
    # /health's runningTasks is what an operator (and the SIGTERM and SIGKILL tests) read as "its tool runs here":
    # a run stopped between its claim and its start goes back to the queue untouched, so it must not count.
    store = HeldStart()
    core, _, (first, _second) = build(store, 5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        outcome = await core.handle(call("slow_compute", {"seconds": 0.2, "label": "held"}), Silent())
        assert isinstance(outcome, Complete)
        task_id = outcome.result["taskId"]
        await wait_until(lambda: task_id in first.running(), 5, "the task claimed")
        await trio.sleep(0.05)
        assert first.tools_running() == []  # claimed, its start not stored yet
        store.go.set()
        await wait_until(lambda: task_id in first.tools_running(), 5, "the task's tool running")
        done = await wait_status(store, task_id, "completed")
        assert done.runs == 1 and first.tools_running() == []
        nursery.cancel_scope.cancel()
