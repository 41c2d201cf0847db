"""A tiny streaming reverse proxy that adds `Authorization: Bearer <token>` to every request.

The official conformance CLIs cannot send a token, so with authentication on they talk to this proxy,
which forwards everything else untouched (Host and Origin included, so the DNS-rebinding checks still
reach the server) and streams answers back chunk by chunk (SSE included). Given several upstreams it sends
each request to the next one in turn: a round-robin load balancer without stickiness, for the suites against
several instances.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"content-length"}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class TokenProxy:
    def __init__(self, upstream: str | list[str], token: str | None) -> None:
        self.upstreams = [url.rstrip("/") for url in ([upstream] if isinstance(upstream, str) else upstream)]
        self.token = token
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), follow_redirects=False)
        self.forwarded = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        if self.token is not None:
            headers = [(k, v) for k, v in headers if k.lower() != b"authorization"]
            headers.append((b"authorization", f"Bearer {self.token}".encode()))
        upstream = self.upstreams[self.forwarded % len(self.upstreams)]
        url = upstream + scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        self.forwarded += 1
        async with trio.open_nursery() as nursery:

            async def stop_when_client_leaves() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_when_client_leaves)
            request = self.client.build_request(scope["method"], url, headers=headers, content=body)
            response = await self.client.send(request, stream=True)
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP],
                    }
                )
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                with trio.CancelScope(shield=True):
                    await response.aclose()
            nursery.cancel_scope.cancel()

    async def run(self, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.graceful_timeout = 1
        try:
            await serve(self, config, task_status=task_status)  # type: ignore[arg-type]
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()
