"""Tasks in the request core: whether a `tools/call` runs as a task, and the `tasks/*` methods of both eras.

Part of the core (no async library, no storage): the task service is reached through the `TaskBook` seam. The
2026-07-28 extension (`io.modelcontextprotocol/tasks`) is opted into per request, in the client's capabilities;
the 2025-11-25 experimental tasks are asked for per call (`params.task`). In both, a tool says whether it may, must
or must never run as a task (`Tool.task_support`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from refserver.call_context import Emitter
from refserver.errors import (
    InternalError,
    InvalidParams,
    MethodNotFound,
    MissingRequiredClientCapability,
    RefserverError,
    TaskNotFound,
)
from refserver.features.catalog import Tool
from refserver.protocol.core import CoreRequest, InputFailure, InputRequest, InputRequired, RequestMeta
from refserver.protocol.envelope import STATELESS_VERSIONS
from refserver.protocol.jsonrpc import Notification
from refserver.protocol.tasks import (
    CANCELLED,
    COMPLETED,
    FORBIDDEN,
    INPUT_REQUIRED,
    RELATED_TASK,
    REQUIRED,
    TaskBook,
    TaskRecord,
    client_declares_extension,
    detailed_task,
    extension_required,
    task_2025,
    task_handle,
)

TASKS_SINCE_2025: Final = "2025-11-25"
"""The first (and only) 2025-era revision with experimental tasks."""
METHODS_2026: Final = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
METHODS_2025: Final = frozenset({"tasks/get", "tasks/result", "tasks/list", "tasks/cancel"})
RESULT_WAIT: Final = 1.0
"""Seconds one `tasks/result` waits on the store before it looks again (the wait itself is unbounded, as the call
is: the client cancels it, or the session's end does)."""
TASKS_PAGE_SIZE: Final = 50
"""Tasks per `tasks/list` page."""
CAPABILITIES_2025: Final[dict[str, Any]] = {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}


@attrs.frozen
class Shaped:
    """A result already in its wire form (task handles are not in the SDK's result tables)."""

    result: dict[str, Any]


def _owner(request: CoreRequest) -> str:
    return request.meta.subject or ""


def is_task_method(request: CoreRequest) -> bool:
    version = request.meta.protocol_version
    if version in STATELESS_VERSIONS:
        return request.method in METHODS_2026
    return version >= TASKS_SINCE_2025 and request.method in METHODS_2025


def _requested_ttl(params: Mapping[str, Any] | None) -> int | None:
    task = (params or {}).get("task")
    if not isinstance(task, Mapping):
        return None
    ttl = task.get("ttl")
    return ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0 else None


class TaskMethods:
    """The core's task logic over a `TaskBook` (None: this server runs no tasks, every call is synchronous)."""

    def __init__(self, book: TaskBook | None) -> None:
        self.book = book

    def wants_task(self, tool: Tool, request: CoreRequest) -> bool:
        """Whether this call of `tool` runs as a task; raises when the tool must and the client cannot take one."""
        version = request.meta.protocol_version
        if version in STATELESS_VERSIONS:
            # The `task` param of 2025 is an unknown field here, never an opt-in (SEP-2663's compatibility rules).
            declared = client_declares_extension(request.meta.client_capabilities)
            if tool.task_support == REQUIRED and not (declared and self.book is not None):
                raise MissingRequiredClientCapability(
                    f"Tool {tool.definition.name} runs only as a task: declare the tasks extension",
                    data={"requiredCapabilities": extension_required()},
                )
            return declared and tool.task_support != FORBIDDEN and self.book is not None
        asked = version >= TASKS_SINCE_2025 and isinstance((request.params or {}).get("task"), Mapping)
        if tool.task_support == REQUIRED and not asked:
            raise MethodNotFound(f"Tool {tool.definition.name} must be called as a task (params.task)")
        if asked and (tool.task_support == FORBIDDEN or self.book is None):
            raise MethodNotFound(f"Tool {tool.definition.name} does not run as a task")
        return asked

    async def start(self, tool: Tool, request: CoreRequest) -> Shaped:
        book = self._book()
        record = await book.create(request, idempotent=tool.idempotent, ttl_ms=_requested_ttl(request.params))
        if request.meta.protocol_version in STATELESS_VERSIONS:
            return Shaped(task_handle(record))
        return Shaped({"task": task_2025(record), "_meta": {RELATED_TASK: {"taskId": record.task_id}}})

    def _book(self) -> TaskBook:
        if self.book is None:
            raise InternalError("this server runs no tasks")
        return self.book

    async def handle(self, request: CoreRequest, emitter: Emitter) -> Shaped | InputRequired:
        if request.meta.protocol_version in STATELESS_VERSIONS:
            return await self._handle_2026(request)
        return await self._handle_2025(request, emitter)

    # --- 2026-07-28: the extension --------------------------------------------------------------------------

    async def followable(self, task_ids: frozenset[str], meta: RequestMeta) -> frozenset[str]:
        """Of the tasks a `subscriptions/listen` asks to follow, those that are the caller's (the acknowledgement
        lists these); -32021 without the extension on the request."""
        if not client_declares_extension(meta.client_capabilities) or self.book is None:
            raise MissingRequiredClientCapability(
                "following tasks needs the tasks extension", data={"requiredCapabilities": extension_required()}
            )
        owner = meta.subject or ""
        owned = set()
        for task_id in task_ids:
            try:
                await self.book.get(task_id, owner)
            except TaskNotFound:
                continue
            owned.add(task_id)
        return frozenset(owned)

    async def describe(self, task_id: str, owner: str) -> dict[str, Any] | None:
        """A task as `notifications/tasks` carries it (its `tasks/get` result without `resultType`)."""
        if self.book is None:
            return None
        try:
            record = await self.book.get(task_id, owner)
        except TaskNotFound:
            return None
        described = detailed_task(record)
        del described["resultType"]
        return described

    async def _handle_2026(self, request: CoreRequest) -> Shaped:
        if not client_declares_extension(request.meta.client_capabilities) or self.book is None:
            raise MissingRequiredClientCapability(
                f"{request.method} needs the tasks extension", data={"requiredCapabilities": extension_required()}
            )
        params = request.params or {}
        task_id = _task_id(params)
        owner = _owner(request)
        if request.method == "tasks/get":
            return Shaped(detailed_task(await self.book.get(task_id, owner)))
        if request.method == "tasks/update":
            responses = params.get("inputResponses", {})
            if not isinstance(responses, Mapping):
                raise InvalidParams("inputResponses must map input request keys to the client's results")
            await self.book.update(task_id, owner, responses)
        else:
            await self.book.cancel(task_id, owner)
        return Shaped({"resultType": "complete"})

    # --- 2025-11-25: experimental tasks ---------------------------------------------------------------------

    async def _handle_2025(self, request: CoreRequest, emitter: Emitter) -> Shaped | InputRequired:
        book = self._book()
        params = request.params or {}
        owner = _owner(request)
        if request.method == "tasks/list":
            return Shaped(await self._list(book, owner, params.get("cursor")))
        task_id = _task_id(params)
        if request.method == "tasks/get":
            return Shaped(task_2025(await book.get(task_id, owner)))
        if request.method == "tasks/cancel":
            record = await book.get(task_id, owner)
            if record.terminal:
                raise InvalidParams(f"Task {task_id} is already {record.status}")
            return Shaped(task_2025(await book.cancel(task_id, owner)))
        return await self._result(book, request, task_id, owner, emitter)

    async def _result(
        self, book: TaskBook, request: CoreRequest, task_id: str, owner: str, emitter: Emitter
    ) -> Shaped | InputRequired:
        """`tasks/result`: wait for the end; questions the task asks go to the client on this call's stream, as
        server-to-client requests (the 2025 adapter does that with an `InputRequired`), and so do its status
        changes (`notifications/tasks/status`)."""
        record = await book.get(task_id, owner)
        answers = {k: v for k, v in request.input_responses.items() if k in record.input_requests}
        failure = next((v for v in answers.values() if isinstance(v, InputFailure)), None)
        if failure is not None:
            raise InternalError(f"Task {task_id} is waiting for input the client did not give: {failure.message}")
        if answers:
            record = await book.update(task_id, owner, answers)
        while not record.terminal:
            if record.status == INPUT_REQUIRED and record.input_requests:
                return InputRequired(
                    {key: _related(asked, task_id) for key, asked in record.input_requests.items()},
                    {"taskId": task_id},
                )
            changed = await book.wait_for_change(record, RESULT_WAIT)
            if changed.status != record.status:
                await emitter.send(Notification("notifications/tasks/status", task_2025(changed)))
            record = changed
        related = {RELATED_TASK: {"taskId": task_id}}
        if record.status == COMPLETED and record.result is not None:
            result = dict(record.result)
            result["_meta"] = {**(result.get("_meta") or {}), **related}
            return Shaped(result)
        if record.status == CANCELLED:
            raise _TaskError(InternalError.jsonrpc_code, f"Task {task_id} was cancelled", related)
        error = record.error or {"code": InternalError.jsonrpc_code, "message": "the task failed"}
        raise _TaskError(int(error["code"]), str(error["message"]), error.get("data"))

    async def _list(self, book: TaskBook, owner: str, cursor: object) -> dict[str, Any]:
        offset = 0
        if cursor is not None:
            if not isinstance(cursor, str) or not cursor.isdigit():
                raise InvalidParams("Invalid cursor")
            offset = int(cursor)
        records: list[TaskRecord] = await book.owned(owner)
        page = records[offset : offset + TASKS_PAGE_SIZE]
        result: dict[str, Any] = {"tasks": [task_2025(record) for record in page]}
        if offset + len(page) < len(records):
            result["nextCursor"] = str(offset + len(page))
        return result


class _TaskError(RefserverError):
    """The JSON-RPC error a finished task ended with, returned by `tasks/result` as the call's own answer."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message, data=data)
        self.jsonrpc_code = code  # type: ignore[misc]
        self.http_status = 200  # type: ignore[misc]


def _task_id(params: Mapping[str, Any]) -> str:
    task_id = params.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise TaskNotFound("taskId must name a task")
    return task_id


def _related(asked: Mapping[str, Any], task_id: str) -> InputRequest:
    params = dict(asked.get("params") or {})
    params["_meta"] = {**(params.get("_meta") or {}), RELATED_TASK: {"taskId": task_id}}
    return InputRequest(str(asked["method"]), params)
