"""A Redis Cluster master SIGKILLed under requests: its replica is promoted, requests get 200 or 503 (never a 500)
and recover by themselves; a session whose writes had reached the replica survives."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import trio

from refserver.backend.redis.keys import session_key
from tests.cluster import RoundRobinTransport, open_session, rpc, start_cluster
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer

RECOVERY = 30.0
"""Seconds the cluster gets to fail over and the instances to serve again (node timeout 1 s, election, then
the clients' slot-map refresh): far above the few seconds it takes here."""


def replica_caught_up(master: RedisServer, replicas: list[RedisServer]) -> bool:
    offset = master.client().info("replication")["master_repl_offset"]
    for replica in replicas:
        info = replica.client().info("replication")
        if info.get("role") == "slave" and info.get("master_port") == master.port:
            return bool(info.get("slave_repl_offset", -1) >= offset)
    return False


async def test_a_killed_master_is_replaced_and_requests_recover(tmp_path: Path) -> None:
    servers = RedisClusterServers(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    servers.start()
    cluster = start_cluster(servers, tmp_path, heartbeat_interval=1)
    try:
        async with httpx.AsyncClient(timeout=10, transport=RoundRobinTransport(cluster.urls)) as http:
            url = cluster.urls[0]
            headers = await open_session(http, url)
            master = servers.master_of(session_key(headers["Mcp-Session-Id"]))
            # What the master acknowledged has reached its replica: replication's own bound, not ours, is tested
            # for what is lost (see docs/scaling.md).
            deadline = time.monotonic() + RECOVERY
            while not replica_caught_up(master, servers.nodes):
                assert time.monotonic() < deadline, "the replica never caught up"
                await trio.sleep(0.05)
            statuses: list[int] = []

            calls = iter(range(10**6))

            async def ping() -> int:
                # setLevel stores the session's record: a write to the slot of the killed master (a ping or a tool
                # call is served from the instance's copy of the session and its local stream).
                message = rpc("logging/setLevel", next(calls), level="info")
                return (await http.post(f"{url}/mcp", json=message, headers=headers)).status_code

            assert await ping() == 200
            master.kill()
            with trio.fail_after(RECOVERY):
                # Requests all along, until the replica is promoted (three masters again) and serves.
                while True:
                    statuses.append(await ping())
                    if len(servers.masters()) == 3 and statuses[-1] == 200:
                        break
                    await trio.sleep(0.05)
            assert set(statuses) <= {200, 503}, statuses  # an outage, never a 500
            # Recovered by itself, and stays recovered: the same session, on every instance.
            for _ in range(len(cluster.urls) * 2):
                assert await ping() == 200
            assert servers.client().exists(session_key(headers["Mcp-Session-Id"]))  # replicated before: kept
    finally:
        cluster.stop()
        servers.kill()
