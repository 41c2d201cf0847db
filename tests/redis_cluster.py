"""A real Redis Cluster started by the tests: six `redis-server --cluster-enabled yes` on free ports, three
masters and three replicas (`redis-cli --cluster create --cluster-replicas 1`), which tests may SIGKILL node by node.

`RedisClusterServers` offers what tests use of a `RedisServer` (`url`, `client()`, `node_clients()`), so the
backend-agnostic tests take either (`tests.cluster.start_cluster` sets REFSERVER_REDIS_CLUSTER from it).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import attrs
import redis
from redis.cluster import RedisCluster

from tests.redis_server import RedisServer, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000
"""cluster-node-timeout: a master silent this long is failed over to its replica (Redis's default, 15 s, would make
a failover test slow; one second is still far above a healthy node's gossip interval here)."""
FORM_TIMEOUT = 30.0
"""Seconds the six nodes get to agree on one slot map with every replica in sync."""


@attrs.define
class RedisClusterServers:
    directory: Path
    nodes: list[RedisServer] = attrs.field(factory=list)
    cluster_mode = True

    @property
    def url(self) -> str:
        """Any node's URL is enough for the cluster client: it discovers the rest."""
        live = next(node for node in self.nodes if node.process is not None and node.process.poll() is None)
        return f"redis://127.0.0.1:{live.port}/0"

    def start(self, count: int = 6) -> None:
        for _ in range(count):
            node = RedisServer(
                self.directory,
                extra_options=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # The gossip port apart: by default it is the port + 10000, which a free port may not allow.
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-config-file",
                    "",  # set below, once the port is known
                ],
            )
            node.extra_options[-1] = str(self.directory / f"nodes-{node.port}.conf")
            node.start()
            self.nodes.append(node)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=FORM_TIMEOUT,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = FORM_TIMEOUT) -> None:
        """Until every live node says `cluster_state:ok`, all slots are served and every master has a synced replica
        (polled: a synchronous harness step, like `RedisServer.start`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy():
                return
            time.sleep(0.05)
        raise RuntimeError(f"the Redis Cluster did not form in {timeout}s")

    def _healthy(self) -> bool:
        try:
            for node in self.live_nodes():
                if node.client().execute_command("CLUSTER INFO").get("cluster_state") != "ok":  # type: ignore[no-untyped-call]
                    return False
            masters = self.masters()
            return len(masters) == 3 and all(self._replica_synced(master) for master in masters)
        except redis.RedisError:
            return False

    def _replica_synced(self, master: RedisServer) -> bool:
        info = master.client().info("replication")
        return any(
            key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
            for key, value in info.items()
        )

    def serves_without(self, dead: RedisServer) -> bool:
        """Every live node agrees the cluster is up and names no slot of `dead` any more (its replica took them)."""
        try:
            for node in self.live_nodes():
                client = node.client()
                if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":  # type: ignore[no-untyped-call]
                    return False
                for entry in client.execute_command("CLUSTER SLOTS"):  # type: ignore[no-untyped-call]
                    if int(entry[2][1]) == dead.port:
                        return False
        except redis.RedisError:
            return False
        return True

    def live_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def masters(self) -> list[RedisServer]:
        return [node for node in self.live_nodes() if node.client().info("replication").get("role") == "master"]

    def master_of(self, key: str) -> RedisServer:
        """The node serving `key`'s slot now."""
        owner = self.client().get_node_from_key(key)  # type: ignore[no-untyped-call]
        return next(node for node in self.nodes if node.port == int(owner.port))

    def client(self) -> RedisCluster:
        """A synchronous cluster client for inspecting what the code under test wrote."""
        live = self.live_nodes()[0]
        return RedisCluster(host="127.0.0.1", port=live.port, socket_timeout=5)

    def node_clients(self) -> list[redis.Redis]:
        return [node.client() for node in self.live_nodes()]

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


RedisBackend = RedisServer | RedisClusterServers
"""What the backend-agnostic tests run against: `start_redis("single" | "cluster", directory)`."""
REDIS_KINDS = ("single", "cluster")


def start_redis(kind: str, directory: Path) -> RedisBackend:
    backend: RedisBackend = RedisClusterServers(directory) if kind == "cluster" else RedisServer(directory)
    backend.start()
    return backend
