"""The task service and runner of one instance, built from settings over the backend's store and bus.

The core needs the service (its `TaskBook`) when it is built, and the runner needs the core to run tools: the
service comes first, the runner is attached to the core afterwards (`attach`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from refserver.backend.messages import TASK_STATUS, ListenNotice, TaskCancelled
from refserver.backend.sessions import Bus
from refserver.backend.tasks import TaskStore
from refserver.config import Settings
from refserver.tasks.runner import RunTool, TaskRunner
from refserver.tasks.service import TaskLimits, TaskService


class TaskSystem:
    def __init__(self, settings: Settings, store: TaskStore, bus: Bus, instance_id: str) -> None:
        self._settings = settings
        self._bus = bus
        self._instance_id = instance_id
        self._runner: TaskRunner | None = None
        self.service = TaskService(
            store,
            TaskLimits(
                ttl=settings.task_ttl, per_subject=settings.tasks_per_subject, queue_limit=settings.task_queue_limit
            ),
            wake_runner=self._wake,
            announce_cancel=self._announce_cancel,
        )

    @property
    def runner(self) -> TaskRunner:
        if self._runner is None:
            raise RuntimeError("TaskSystem.attach() has not been called")
        return self._runner

    def attach(self, run_tool: RunTool, publish_notice: Callable[[ListenNotice], Awaitable[None]]) -> TaskRunner:
        self._runner = TaskRunner(
            self.service.store,
            run_tool,
            consumer=self._instance_id,
            workers=self._settings.task_workers,
            lease=self._settings.task_lease,
            max_result_bytes=self._settings.task_max_result_bytes,
            publish_notice=publish_notice,
        )
        self._bus.add_global_handler(self._runner.on_global_message)

        async def status_changed(task_id: str) -> None:
            await publish_notice(ListenNotice(TASK_STATUS, task_id=task_id))

        self.service.status_changed = status_changed
        return self._runner

    async def run(self, *, task_status: trio.TaskStatus[TaskRunner] = trio.TASK_STATUS_IGNORED) -> None:
        await self.runner.run(task_status=task_status)

    def _wake(self) -> None:
        if self._runner is not None:
            self._runner.wake()

    async def _announce_cancel(self, task_id: str) -> None:
        if self._runner is not None:
            self._runner.cancel_local(task_id)
        if self._bus.distributed:
            await self._bus.publish_global(TaskCancelled(task_id))
