"""Several refserver instances sharing one redis-server, and clients that spread requests over them.

`RoundRobinTransport` sends every HTTP request to the next instance in turn, like a plain round-robin
load balancer with no stickiness: it is used under both httpx (raw tests) and httpx2 (the official
`mcp` client), so every feature is exercised with consecutive requests landing on different instances.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import httpx2

from tests.conftest import INIT_PARAMS, POST_HEADERS, ServerProcess, free_port, server_env
from tests.redis_cluster import RedisBackend


@attrs.define
class Cluster:
    redis: RedisBackend
    instances: list[ServerProcess]

    @property
    def urls(self) -> list[str]:
        return [i.url for i in self.instances]

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()


def start_cluster(
    redis: RedisBackend, directory: Path, count: int = 3, *, ports: list[int] | None = None, **settings: Any
) -> Cluster:
    """`count` instances behind one public URL (`base_url`, by default one no instance listens on)."""
    settings.setdefault("redis_url", redis.url)
    settings.setdefault("redis_cluster", redis.cluster_mode)
    settings.setdefault("heartbeat_interval", 1)
    settings.setdefault("base_url", "http://127.0.0.1:3232")
    ports = ports or [free_port() for _ in range(count)]
    instances = []
    try:
        for index, port in enumerate(ports[:count]):
            env = server_env(allowed_hosts="127.0.0.1", **settings)
            instance = ServerProcess(port, env, directory / f"instance-{index}.log")
            instance.start()
            instances.append(instance)
    except BaseException:
        for instance in instances:
            instance.stop()
        raise
    return Cluster(redis, instances)


class _Rotation:
    def __init__(self, urls: list[str]) -> None:
        self._ports = itertools.cycle([int(u.rsplit(":", 1)[1]) for u in urls])
        self.sent: list[int] = []

    def next_port(self) -> int:
        port = next(self._ports)
        self.sent.append(port)
        return port


class RoundRobinTransport(httpx.AsyncBaseTransport):
    """httpx: each request goes to the next instance."""

    def __init__(self, urls: list[str]) -> None:
        self.rotation = _Rotation(urls)
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(port=self.rotation.next_port())
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class RoundRobinTransport2(httpx2.AsyncBaseTransport):
    """httpx2 (the mcp SDK's HTTP client): each request goes to the next instance."""

    def __init__(self, urls: list[str]) -> None:
        self.rotation = _Rotation(urls)
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=self.rotation.next_port())
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def redis_keys(redis: RedisBackend) -> list[str]:
    return sorted(k.decode() if isinstance(k, bytes) else k for k in redis.client().scan_iter("refserver:*"))


def session_keys(redis: RedisBackend, session_id: str) -> list[str]:
    return [k for k in redis_keys(redis) if session_id in k]


def iter_instances(cluster: Cluster) -> Iterator[ServerProcess]:
    return iter(cluster.instances)


def rpc(method: str, request_id: int | str | None = None, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params:
        message["params"] = params
    return message


def long_call(request_id: int | str, duration: float, steps: int) -> dict[str, Any]:
    return rpc(
        "tools/call",
        request_id,
        name="longRunningOperation",
        arguments={"duration": duration, "steps": steps},
        _meta={"progressToken": f"p{request_id}"},
    )


async def open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    response = await http.post(f"{url}/mcp", json=rpc("initialize", 0, **INIT_PARAMS), headers=POST_HEADERS)
    assert response.status_code == 200, response.text
    headers = {
        **POST_HEADERS,
        "Mcp-Session-Id": response.headers["mcp-session-id"],
        "MCP-Protocol-Version": "2025-11-25",
    }
    assert (await http.post(f"{url}/mcp", json=rpc("notifications/initialized"), headers=headers)).status_code == 202
    return headers
