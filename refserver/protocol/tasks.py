"""Tasks, sans-IO: the durable record of a long tool call, its status machine, and its wire forms in both eras.

A task is a `tools/call` whose answer comes later: the client gets a handle at once and polls (`tasks/get`), answers
what the task asks (`tasks/update`, or the 2025 `tasks/result` stream), or cancels it. The record below is what the
backend keeps (any instance may load it); every change is a pure function from one record to the next, with the
version bumped, so the store can apply it as a compare-and-set and two writers can never both win.

Two wire dialects over the one record: the 2026-07-28 tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663:
flat `resultType: "task"` handles, `ttlMs`, results inlined in `tasks/get`) and the 2025-11-25 experimental tasks
(`CreateTaskResult.task`, `ttl`, `tasks/result`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import attrs

from refserver.protocol.core import CoreRequest, InputRequest, InputRequired

TASKS_EXTENSION: Final = "io.modelcontextprotocol/tasks"
RELATED_TASK: Final = "io.modelcontextprotocol/related-task"

WORKING: Final = "working"
INPUT_REQUIRED: Final = "input_required"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
TERMINAL: Final = frozenset({COMPLETED, FAILED, CANCELLED})
"""A task in one of these never changes again (both eras' status machines)."""

FORBIDDEN: Final = "forbidden"
OPTIONAL: Final = "optional"
REQUIRED: Final = "required"
"""A tool's task support: never a task, a task when the client can take one, or only ever as a task."""


@attrs.frozen
class TaskRecord:
    """Everything about one task, as the backend stores it (JSON), owned by the token's subject."""

    task_id: str
    owner: str
    """The subject of the token that created it ("" without authentication); nobody else may see it."""
    protocol_version: str
    tool: str
    arguments: Mapping[str, Any]
    client_capabilities: Mapping[str, Any]
    client_info: Mapping[str, Any] | None
    idempotent: bool
    """Whether the tool may be run again from the start when the instance running it is lost."""
    created_at: float
    updated_at: float
    ttl_ms: int
    poll_interval_ms: int
    status: str = WORKING
    status_message: str | None = None
    result: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    input_requests: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    """Outstanding questions, by task-scoped key: {"method", "params"} (only while `input_required`)."""
    input_keys: Mapping[str, str] = attrs.field(factory=dict)
    """Task-scoped key -> the key the handler used for the same question."""
    answers: Mapping[str, Any] = attrs.field(factory=dict)
    """The answers gathered so far for the handler's current round, by the handler's keys."""
    handler_state: Mapping[str, Any] | None = None
    rounds: int = 0
    runner: str | None = None
    """`<instance>/<claim>` while a run of the task is in progress; a run found unfinished was lost."""
    runs: int = 0
    version: int = 0
    trace: Mapping[str, str] | None = None
    """The W3C trace context of the request that created it: every run, on any instance, joins that trace."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def expires_at(self) -> float:
        return self.created_at + self.ttl_ms / 1000

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self, recurse=False), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> TaskRecord:
        return cls(**json.loads(raw))


def _next(record: TaskRecord, now: float, **changes: Any) -> TaskRecord:
    return attrs.evolve(record, updated_at=max(now, record.updated_at), version=record.version + 1, **changes)


class TaskFinished(Exception):
    """The transition is not allowed: the task is already terminal."""


def _live(record: TaskRecord) -> None:
    if record.terminal:
        raise TaskFinished(record.status)


def started(record: TaskRecord, runner: str, now: float) -> TaskRecord:
    """A run begins on `runner` (a new claim); the task is working, whatever it waited for is in `answers`."""
    _live(record)
    return _next(record, now, status=WORKING, runner=runner, runs=record.runs + 1)


def progressed(record: TaskRecord, message: str, now: float) -> TaskRecord:
    _live(record)
    return _next(record, now, status_message=message)


def parked(record: TaskRecord, asked: InputRequired, now: float) -> TaskRecord:
    """The handler needs the client: `input_required` with fresh keys (unique over the task's lifetime)."""
    _live(record)
    rounds = record.rounds + 1
    keys = {f"r{rounds}-{key}": key for key in asked.input_requests}
    requests = {
        task_key: _input_request(asked.input_requests[key], record.protocol_version) for task_key, key in keys.items()
    }
    return _next(
        record,
        now,
        status=INPUT_REQUIRED,
        status_message="waiting for input",
        input_requests=requests,
        input_keys=keys,
        answers={},
        handler_state=dict(asked.state),
        rounds=rounds,
        runner=None,
    )


def _input_request(asked: InputRequest, protocol_version: str) -> dict[str, Any]:
    return {"method": asked.method, "params": asked.wire_params(protocol_version)}


def answered(record: TaskRecord, responses: Mapping[str, Any], now: float) -> tuple[TaskRecord, bool]:
    """Take the client's answers; keys not outstanding are ignored (the extension says so). Returns the next record
    (unchanged if nothing applied) and whether every question is now answered, so the task must run again."""
    if record.status != INPUT_REQUIRED:
        return record, False
    taken = {key: value for key, value in responses.items() if key in record.input_requests}
    if not taken:
        return record, False
    answers = dict(record.answers)
    for task_key, value in taken.items():
        answers[record.input_keys[task_key]] = value
    outstanding = {key: value for key, value in record.input_requests.items() if key not in taken}
    keys = {key: value for key, value in record.input_keys.items() if key not in taken}
    if outstanding:
        return _next(record, now, input_requests=outstanding, input_keys=keys, answers=answers), False
    return (
        _next(record, now, status=WORKING, status_message=None, input_requests={}, input_keys={}, answers=answers),
        True,
    )


def completed(record: TaskRecord, result: Mapping[str, Any], now: float) -> TaskRecord:
    _live(record)
    return _next(
        record, now, status=COMPLETED, status_message=None, result=dict(result), runner=None, handler_state=None
    )


def failed(record: TaskRecord, code: int, message: str, now: float, data: Any = None) -> TaskRecord:
    """A JSON-RPC error ended the task (a tool's own error result is `completed` with `isError`)."""
    _live(record)
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _next(
        record,
        now,
        status=FAILED,
        status_message=message,
        error=error,
        input_requests={},
        input_keys={},
        runner=None,
        handler_state=None,
    )


def cancelled(record: TaskRecord, now: float) -> TaskRecord:
    _live(record)
    return _next(
        record,
        now,
        status=CANCELLED,
        status_message="cancelled by the client",
        input_requests={},
        input_keys={},
        runner=None,
        handler_state=None,
    )


# --- wire forms ------------------------------------------------------------------------------------------------


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _task_fields(record: TaskRecord, *, ttl_key: str, poll_key: str) -> dict[str, Any]:
    """The Task object's fields; the eras name the two durations differently (`ttlMs` / `ttl`)."""
    task: dict[str, Any] = {
        "taskId": record.task_id,
        "status": record.status,
        "createdAt": _timestamp(record.created_at),
        "lastUpdatedAt": _timestamp(record.updated_at),
        ttl_key: record.ttl_ms,
        poll_key: record.poll_interval_ms,
    }
    if record.status_message is not None:
        task["statusMessage"] = record.status_message
    return task


def _base_2026(record: TaskRecord) -> dict[str, Any]:
    return _task_fields(record, ttl_key="ttlMs", poll_key="pollIntervalMs")


def task_handle(record: TaskRecord) -> dict[str, Any]:
    """The 2026 `CreateTaskResult`: flat, nothing of the outcome in it."""
    return {"resultType": "task", **_base_2026(record)}


def detailed_task(record: TaskRecord) -> dict[str, Any]:
    """The 2026 `tasks/get` result: the task, with what its status carries inlined."""
    task = _base_2026(record)
    if record.status == INPUT_REQUIRED:
        task["inputRequests"] = {key: dict(value) for key, value in record.input_requests.items()}
    elif record.status == COMPLETED and record.result is not None:
        task["result"] = dict(record.result)
    elif record.status == FAILED and record.error is not None:
        task["error"] = dict(record.error)
    return {"resultType": "complete", **task}


def task_2025(record: TaskRecord) -> dict[str, Any]:
    """The 2025-11-25 `Task` object (`tasks/get`, `CreateTaskResult.task`, `notifications/tasks/status`)."""
    return _task_fields(record, ttl_key="ttl", poll_key="pollInterval")


def client_declares_extension(capabilities: Mapping[str, Any]) -> bool:
    """The 2026 opt-in, per request: `extensions["io.modelcontextprotocol/tasks"]` in the client's capabilities."""
    extensions = capabilities.get("extensions")
    return isinstance(extensions, Mapping) and isinstance(extensions.get(TASKS_EXTENSION), Mapping)


def extension_required() -> dict[str, Any]:
    """The `requiredCapabilities` of a -32021 error for a request that needs the tasks extension."""
    return {"extensions": {TASKS_EXTENSION: {}}}


class TaskBook(Protocol):
    """What the request core needs of the task service (`refserver/tasks/`): the I/O stays behind this seam.

    Every call names the caller (`owner`): a task of another owner is not found, exactly like an unknown one.
    """

    async def create(self, request: CoreRequest, *, idempotent: bool, ttl_ms: int | None = None) -> TaskRecord:
        """Store the task for this `tools/call` (durably: a `tasks/get` anywhere finds it) and queue its work.
        `request.input_responses` and `request.request_state` carry over into its first run."""
        ...

    async def get(self, task_id: str, owner: str) -> TaskRecord:
        """The task, or `TaskNotFound`."""
        ...

    async def update(self, task_id: str, owner: str, responses: Mapping[str, Any]) -> TaskRecord:
        """Apply the client's answers (keys not outstanding are ignored) before returning; resume the task once
        every question is answered."""
        ...

    async def cancel(self, task_id: str, owner: str) -> TaskRecord:
        """Mark the task `cancelled` (a terminal task stays as it is) and stop its work wherever it runs."""
        ...

    async def wait_for_change(self, record: TaskRecord, seconds: float) -> TaskRecord:
        """The task once its version moved past `record`'s, or as it is after `seconds`."""
        ...

    async def owned(self, owner: str) -> list[TaskRecord]:
        """The owner's tasks that have not expired, newest first."""
        ...
