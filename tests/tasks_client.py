"""A raw client of the tasks extension (2026-07-28) for the tests: create, poll, update, cancel, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio

from refserver.protocol.sse import SSEDecoder
from refserver.protocol.tasks import TASKS_EXTENSION, TERMINAL
from tests.conftest import MODERN_META, modern_request

CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
WITH_TASKS = {**MODERN_META[CAPABILITIES_KEY], "extensions": {TASKS_EXTENSION: {}}}
POLL = 0.05
"""Seconds between two `tasks/get` while waiting for a status (a test's wait, not a client's pollIntervalMs)."""


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    decoder = SSEDecoder()
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            if event.data:
                yield json.loads(event.data)


class TasksClient:
    """One user (a token, or none) talking to one URL or, with several, to each in turn (no stickiness)."""

    def __init__(
        self, http: httpx.AsyncClient, urls: list[str], token: str | None = None, *, tasks: bool = True
    ) -> None:
        self.http = http
        self.urls = urls
        self.token = token
        self.capabilities = WITH_TASKS if tasks else MODERN_META[CAPABILITIES_KEY]
        self._turn = 0
        self._ids = 0
        self.served_by: list[str] = []

    def _next_url(self) -> str:
        url = self.urls[self._turn % len(self.urls)]
        self._turn += 1
        self.served_by.append(url)
        return url

    async def request(
        self, method: str, params: dict[str, Any], *, url: str | None = None, meta: dict[str, Any] | None = None
    ) -> tuple[int, dict]:
        """The HTTP status and the JSON-RPC answer (the last message, if the answer is a stream); `meta` goes
        into `_meta` beside the envelope."""
        self._ids += 1
        body, headers = modern_request(
            method, params, self._ids, **{CAPABILITIES_KEY: self.capabilities, **(meta or {})}
        )
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        target = url or self._next_url()
        async with self.http.stream("POST", f"{target}/mcp", json=body, headers=headers) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                answers = [m async for m in sse_messages(response) if m.get("id") == self._ids]
                assert len(answers) == 1, answers
                return response.status_code, answers[0]
            return response.status_code, json.loads(await response.aread())

    async def result(self, method: str, params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        status, answer = await self.request(method, params, **kwargs)
        assert status == 200 and "result" in answer, (status, answer)
        result: dict[str, Any] = answer["result"]
        return result

    async def error(self, method: str, params: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        _, answer = await self.request(method, params, **kwargs)
        assert "error" in answer, answer
        error: dict[str, Any] = answer["error"]
        return error

    async def start(self, tool: str, arguments: dict[str, Any], **kwargs: Any) -> str:
        handle = await self.result("tools/call", {"name": tool, "arguments": arguments}, **kwargs)
        assert handle["resultType"] == "task", handle
        task_id: str = handle["taskId"]
        return task_id

    async def get(self, task_id: str, **kwargs: Any) -> dict[str, Any]:
        return await self.result("tasks/get", {"taskId": task_id}, **kwargs)

    async def wait_for(self, task_id: str, statuses: set[str] | frozenset[str], seconds: float) -> dict[str, Any]:
        with trio.fail_after(seconds):
            while True:
                task = await self.get(task_id)
                if task["status"] in statuses:
                    return task
                await trio.sleep(POLL)

    async def wait_terminal(self, task_id: str, seconds: float) -> dict[str, Any]:
        return await self.wait_for(task_id, TERMINAL, seconds)
